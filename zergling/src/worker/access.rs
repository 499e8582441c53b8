//! The access log (`log-format`, off by default): one line per request, written through
//! `tracing` (target `access`) once hyper has taken the whole response, in uWSGI's default
//! request-line format or as one JSON object. Each line names the worker and the generation.
//! What is not set costs a request one branch.

use std::time::Instant;

use hyper::body::Incoming;
use hyper::Request;
use zerg::config::LogFormat;

use crate::wsgi::environ::ConnEnv;

/// What every line of one worker shares.
#[derive(Clone, Copy)]
pub struct AccessLog {
    pub format: LogFormat,
    pub worker: u32,
    pub generation: u64,
    pub pid: u32,
}

impl AccessLog {
    /// A request begins: its line is written when the entry is dropped.
    pub fn begin(&self, req: &Request<Incoming>, conn: &ConnEnv) -> Box<Entry> {
        Box::new(Entry {
            log: *self,
            addr: conn.client_addr(),
            method: req.method().to_string(),
            uri: req.uri().to_string(),
            proto: format!("{:?}", req.version()),
            started: Instant::now(),
            status: 0,
            bytes: 0,
        })
    }
}

/// One request's line, as it is answered.
pub struct Entry {
    log: AccessLog,
    addr: String,
    method: String,
    uri: String,
    proto: String,
    started: Instant,
    /// The response's status; 0 until it is known.
    pub status: u16,
    /// Body bytes of the response taken by hyper.
    pub bytes: u64,
}

impl Entry {
    /// The line, in the worker's format.
    fn line(&self) -> String {
        let msecs = self.started.elapsed().as_millis();
        let AccessLog {
            format,
            worker,
            generation,
            pid,
        } = self.log;
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        match format {
            // uWSGI's default `[pid: P|app: A|req: N/M] ADDR (USER) {V vars in B bytes} [DATE]
            // METHOD URI => generated N bytes in M msecs (PROTO STATUS) ...`, with the worker
            // and generation where uWSGI names its app and request counters.
            LogFormat::Uwsgi => format!(
                "[pid: {pid}|worker: {worker}|gen: {generation}] {} () [{date}] {} {} => \
                 generated {} bytes in {msecs} msecs ({} {})",
                self.addr, self.method, self.uri, self.bytes, self.proto, self.status
            ),
            LogFormat::Json => serde_json::json!({
                "time": date,
                "pid": pid,
                "worker": worker,
                "generation": generation,
                "addr": self.addr,
                "method": self.method,
                "uri": self.uri,
                "proto": self.proto,
                "status": self.status,
                "size": self.bytes,
                "msecs": msecs as u64,
            })
            .to_string(),
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        tracing::info!(target: "access", "{}", self.line());
    }
}
