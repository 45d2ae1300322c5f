//! System tests: start the real `kafclaw` binary on 127.0.0.1:0 with a temporary `--home` and
//! talk HTTP to it. The test process's own environment is never changed: each child gets a
//! cleared environment plus exactly what the test sets.

mod agent;
mod auth;
mod browser;
mod channels;
mod command_line;
mod confinement;
mod deploy;
mod docs;
mod edge;
mod exactly_once;
mod faults;
mod fleet;
mod harness;
mod incidents;
mod isolation;
mod lifecycle;
mod limits;
mod messages;
mod metrics;
mod model_server;
mod openapi;
mod operator;
mod pairing;
mod prometheus;
mod restore;
mod secret_files;
mod skills;
mod startup;
mod supervision;
mod tls;
mod trust;
