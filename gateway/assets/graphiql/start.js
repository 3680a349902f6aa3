// Renders GraphiQL against this server's /graphql, over HTTP and WebSocket.
// A file of its own (not an inline script) so that the page's
// Content-Security-Policy can allow scripts from this server only.
(function () {
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
    })
  );
})();
