//! Pieces shared by `zerg-pool`, `zergling` and `zergctl`: the configuration schema, the control
//! protocol, fd passing over unix sockets, log setup, and the RSS of a process.

pub mod config;
pub mod control;
pub mod fdpass;
pub mod logging;
pub mod mule_entry;
pub mod mule_record;
pub mod privileges;
pub mod rss;
pub mod uwsgi_config;
