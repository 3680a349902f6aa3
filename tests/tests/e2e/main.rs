//! End-to-end tests: the real `attach` binary, driven over HTTP as a client would.
//! Each test has its own process, port and data directory.

mod access;
mod auth;
mod clinics;
mod cluster;
mod connections;
mod disk;
mod feed;
mod helpers;
mod journey;
mod loadtest;
mod logs;
mod panels;
mod propose;
mod redis;
mod shared_limits;
mod slow_subscriber;
mod spill;
mod traces;
