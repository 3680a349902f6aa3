// Renders GraphiQL against this server's /graphql, over HTTP and WebSocket.
// A file of its own (not an inline script) so that the page's
// Content-Security-Policy can allow scripts from this server only.
(function () {
  // GraphiQL keeps its tabs and history (whole operations: PHNs, names, dates
  // of birth) in localStorage unless given another store. This one lasts as
  // long as the page: nothing about a patient stays in the browser.
  var kept = new Map();
  // What GraphiQL kept there under earlier versions of Attach (which let it
  // use localStorage) is taken away.
  try {
    Object.keys(window.localStorage)
      .filter(function (key) { return key.indexOf("graphiql:") === 0; })
      .forEach(function (key) { window.localStorage.removeItem(key); });
  } catch (e) {
    // No localStorage here (a browser setting): nothing to take away.
  }
  var storage = {
    getItem: function (key) { return kept.has(key) ? kept.get(key) : null; },
    setItem: function (key, value) { kept.set(key, String(value)); },
    removeItem: function (key) { kept.delete(key); },
    clear: function () { kept.clear(); },
    key: function (i) { return Array.from(kept.keys())[i] || null; },
    get length() { return kept.size; },
  };
  function url(path, socket) {
    var u = new URL(path, window.location.origin);
    if (socket) {
      u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    }
    return u.toString();
  }
  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(GraphiQL, {
      fetcher: GraphiQL.createFetcher({
        url: url("/graphql", false),
        subscriptionUrl: url("/graphql", true),
      }),
      defaultEditorToolsVisibility: true,
      storage: storage,
    })
  );
})();
