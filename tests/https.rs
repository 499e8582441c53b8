//! HTTPS through the real binaries: the app answers over TLS with an environ that says so,
//! keep-alive holds, `http-to-https` redirects, a reload serves renewed certificate files
//! under load without failing a request, a broken key is refused by the new generation while
//! the old one serves on, and Galaxy's `shared-socket` layout runs as written.
//!
//! The test CA and the server certificates are made here at run time (rcgen); nothing secret
//! is committed. The client is rustls with that CA as its only root.

mod common;

use std::ffi::OsStr;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::load::{keep_alive, Load};
use common::{apps_dir, free_port, Client, Response, Server, DEADLINE};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::Value;

/// A test CA, made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate for `localhost` and 127.0.0.1, and its key.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "zerg test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    /// A certificate whose common name is `name`, so each one is told from the others.
    fn leaf(&self, name: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A client that trusts this CA alone.
    fn client(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Leaf {
    /// Writes `server.crt` and `server.key` in `dir`, the files the configs name.
    fn install(&self, dir: &Path) {
        std::fs::write(dir.join("server.crt"), &self.cert_pem).unwrap();
        std::fs::write(dir.join("server.key"), &self.key_pem).unwrap();
    }
}

/// One HTTPS connection.
type TlsClient = Client<StreamOwned<ClientConnection, TcpStream>>;

/// Connects to `addr` over TLS, trusting what `config` trusts; the handshake is done.
fn tls_connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> std::io::Result<TlsClient> {
    let mut sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(DEADLINE))?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(Client::over(StreamOwned::new(conn, sock)))
}

/// The certificate the server showed.
fn peer_cert(client: &TlsClient) -> CertificateDer<'static> {
    client.stream().conn.peer_certificates().unwrap()[0].clone()
}

fn get(client: &mut TlsClient, path: &str) -> Response {
    client
        .request(&format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"))
        .unwrap()
}

/// The environ echo_environ.py answered.
fn environ(r: &Response) -> Value {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice::<Value>(&r.body).unwrap()["environ"].clone()
}

/// A pool serving echo_environ.py on a plain `http` listener and an `https` one whose
/// certificate is `leaf`, both on free ports; `rest` is more of the config.
fn start_https(leaf: &Leaf, rest: &str) -> (Server, SocketAddr) {
    start_https_app(leaf, "echo_environ.py", rest)
}

/// [`start_https`] with `app` from tests/apps (an ASGI one with `interface: asgi` in `rest`).
fn start_https_app(leaf: &Leaf, app: &str, rest: &str) -> (Server, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    leaf.install(dir.path());
    let (http, https) = (free_port(), free_port());
    let control = dir.path().join("zerg.sock");
    let config = dir.path().join("zerg.yml");
    // The certificate's paths are relative: to the working directory, as every path is.
    std::fs::write(
        &config,
        format!(
            "zerg-server: {}\nhttp: 127.0.0.1:{http}\nhttps: 127.0.0.1:{https},server.crt,server.key\n\
             wsgi-file: {}\nprocesses: 2\nreload-mercy: 10\nworker-reload-mercy: 10\n{rest}",
            control.display(),
            apps_dir().join(app).display()
        ),
    )
    .unwrap();
    let http = format!("127.0.0.1:{http}").parse().unwrap();
    let server = Server::spawn_with_config(dir, config, control, http);
    server.wait_serving();
    (server, format!("127.0.0.1:{https}").parse().unwrap())
}

fn reload(server: &Server) -> (bool, String) {
    let out = server.zergctl(&["reload"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn https_serves_the_app_with_an_https_environ_over_keep_alive() {
    let ca = Ca::new();
    let leaf = ca.leaf("first");
    let (server, https) = start_https(&leaf, "");
    let mut client = tls_connect(https, &ca.client()).unwrap();
    assert_eq!(peer_cert(&client), leaf.der);
    for _ in 0..3 {
        let answer = get(&mut client, "/over/tls?x=1");
        assert_eq!(answer.header("connection"), None, "kept alive");
        let env = environ(&answer);
        assert_eq!(env["wsgi.url_scheme"], "https");
        assert_eq!(env["HTTPS"], "on");
        assert_eq!(env["PATH_INFO"], "/over/tls");
        assert_eq!(env["QUERY_STRING"], "x=1");
        assert_eq!(env["SERVER_PORT"], https.port().to_string());
    }
    // A refusal over TLS, as over HTTP: the app never sees it, the connection closes after.
    let refused = client
        .request("GET /a b HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert_eq!(refused.status, 400);
    assert_eq!(refused.header("connection"), Some("close"));

    // The plain listener beside it says nothing of TLS.
    let r = server.get("/");
    let env = &serde_json::from_slice::<Value>(&r.body).unwrap()["environ"];
    assert_eq!(env["wsgi.url_scheme"], "http");
    assert!(env.get("HTTPS").is_none(), "{env}");

    // A client that does not trust the certificate gets no answer.
    let stranger = Ca::new();
    assert!(tls_connect(https, &stranger.client()).is_err());
    // And a plain HTTP request on the TLS port is no request.
    let mut plain = Client::connect(https);
    plain.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let answered = plain.read_to_close();
    assert!(!answered.starts_with(b"HTTP/1.1 200"), "{answered:?}");
}

#[test]
fn an_asgi_app_over_https_sees_the_https_scheme_and_its_server() {
    let ca = Ca::new();
    let leaf = ca.leaf("first");
    let (server, https) = start_https_app(&leaf, "asgi_conformance.py", "interface: asgi\n");
    let mut client = tls_connect(https, &ca.client()).unwrap();
    for _ in 0..2 {
        let answer = get(&mut client, "/echo/over/tls?x=1");
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.header("connection"), None, "kept alive");
        let scope: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(scope["scheme"], "https");
        assert_eq!(scope["path"], "/echo/over/tls");
        assert_eq!(scope["query_string"], "x=1");
        assert_eq!(scope["server"][1], https.port());
    }
    let plain: Value = serde_json::from_slice(&server.get("/echo").body).unwrap();
    assert_eq!(plain["scheme"], "http");
}

#[test]
fn http_to_https_redirects_every_request_without_calling_the_app() {
    let ca = Ca::new();
    let (redirect, to_443) = (free_port(), free_port());
    let (server, https) = start_https(
        &ca.leaf("first"),
        &format!("http-to-https:\n  - 127.0.0.1:{redirect}\n  - 127.0.0.1:{to_443},443\n"),
    );
    let mut c = Client::connect(format!("127.0.0.1:{redirect}").parse().unwrap());
    c.send(&format!(
        "GET /api/jobs?state=new HTTP/1.1\r\nHost: localhost:{redirect}\r\n\r\n"
    ));
    let r = c.response();
    assert_eq!(r.status, 301);
    let location = r.header("location").unwrap().to_owned();
    assert_eq!(
        location,
        format!("https://localhost:{}/api/jobs?state=new", https.port())
    );
    // On the same connection: a POST keeps its method and body with a 308.
    c.send("POST /api/jobs HTTP/1.1\r\nHost: galaxy.example\r\nContent-Length: 4\r\n\r\ncat1");
    let r = c.response();
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://galaxy.example:{}/api/jobs", https.port()).as_str())
    );
    // No host to name: 400, and the connection closes.
    c.send("GET / HTTP/1.0\r\n\r\n");
    assert_eq!(c.response().status, 400);

    // The redirect's URL leads to the app, over TLS.
    let mut tls = tls_connect(https, &ca.client()).unwrap();
    let env = environ(&get(&mut tls, "/api/jobs?state=new"));
    assert_eq!(env["wsgi.url_scheme"], "https");

    // To 443 the URL names no port.
    let mut c = Client::connect(format!("127.0.0.1:{to_443}").parse().unwrap());
    c.send("HEAD /x HTTP/1.1\r\nHost: galaxy.example:80\r\n\r\n");
    c.head = true;
    let r = c.response();
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://galaxy.example/x"));
    drop(server);
}

#[test]
fn a_reload_serves_renewed_certificate_files_and_fails_no_request() {
    let ca = Ca::new();
    let first = ca.leaf("first");
    let (server, https) = start_https(&first, "");
    let client = ca.client();
    let load = {
        let client = client.clone();
        Load::start(8, move |conn: &mut Option<TlsClient>| {
            let raw = "GET / HTTP/1.1\r\nHost: load\r\n\r\n";
            let r = keep_alive(conn, || tls_connect(https, &client), raw)?;
            match r.status {
                200 => Ok(()),
                status => Err(format!("status {status}")),
            }
        })
    };
    load.wait_for_more("load to flow", 200);
    for name in ["second", "third", "fourth"] {
        let renewed = ca.leaf(name);
        renewed.install(server.dir.path());
        let (ok, out) = reload(&server);
        assert!(ok, "reload to the {name} certificate failed: {out}");
        // Once the reload has returned, every new connection gets the renewed certificate.
        for _ in 0..4 {
            let c = tls_connect(https, &client).unwrap();
            assert_eq!(peer_cert(&c), renewed.der, "after the reload to {name}");
        }
        load.wait_for_more("traffic after the reload", 200);
    }
    let (answered, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        answered.len() + failures.len(),
        &failures[..failures.len().min(10)]
    );
}

#[test]
fn a_broken_key_rolls_the_reload_back_and_the_old_certificate_serves_on() {
    let ca = Ca::new();
    let first = ca.leaf("first");
    let (server, https) = start_https(&first, "");
    let client = ca.client();
    let mut kept = tls_connect(https, &client).unwrap();
    assert_eq!(get(&mut kept, "/").status, 200);

    // A renewed certificate with the key of another one: they do not match.
    let renewed = ca.leaf("second");
    let other = ca.leaf("other");
    std::fs::write(server.dir.path().join("server.crt"), &renewed.cert_pem).unwrap();
    std::fs::write(server.dir.path().join("server.key"), &other.key_pem).unwrap();
    let (ok, out) = reload(&server);
    assert!(!ok, "a reload with a broken key must roll back: {out}");
    assert!(
        out.contains("does not match the certificate") && out.contains("server.key"),
        "the reason reaches the operator: {out}"
    );
    // The old generation serves on, with the certificate it read.
    assert_eq!(get(&mut kept, "/").status, 200, "a kept-alive connection");
    let mut fresh = tls_connect(https, &client).unwrap();
    assert_eq!(peer_cert(&fresh), first.der);
    assert_eq!(get(&mut fresh, "/").status, 200);

    // A key that is no PEM at all is named too; then a good pair reloads.
    std::fs::write(server.dir.path().join("server.key"), "not a key\n").unwrap();
    let (ok, out) = reload(&server);
    assert!(!ok && out.contains("holds no private key"), "{out}");
    renewed.install(server.dir.path());
    let (ok, out) = reload(&server);
    assert!(ok, "{out}");
    assert_eq!(
        peer_cert(&tls_connect(https, &client).unwrap()),
        renewed.der
    );
}

/// Galaxy's `uwsgi:` section with its listeners as the guide writes them: two shared sockets,
/// the HTTPS one carrying the certificate, named by `http: =0` (or `http-to-https: =0`) and
/// `https: =1`. High ports here; binding below 1024 is the pool's as root.
fn galaxy_layout(ca: &Ca, first: &str) -> (Server, SocketAddr, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    ca.leaf("galaxy").install(dir.path());
    let (plain, tls) = (free_port(), free_port());
    let path: PathBuf = dir.path().join("galaxy.yml");
    std::fs::write(
        &path,
        format!(
            "galaxy:\n  admin_users: admin@example.org\n\
             uwsgi:\n  wsgi-file: {}\n  master: true\n  processes: 1\n\
             \x20 shared-socket: 127.0.0.1:{plain}\n\
             \x20 shared-socket: 127.0.0.1:{tls},server.crt,server.key\n\
             \x20 {first}: =0\n  https: =1\n\
             \x20 reload-mercy: 10\n  worker-reload-mercy: 10\n",
            apps_dir().join("echo_environ.py").display()
        ),
    )
    .unwrap();
    let control = std::fs::canonicalize(dir.path())
        .unwrap()
        .join("galaxy.zerg.sock");
    let plain: SocketAddr = format!("127.0.0.1:{plain}").parse().unwrap();
    let server = Server::spawn_with_args(
        dir,
        &[OsStr::new("--yaml"), path.as_os_str()],
        path.clone(),
        control,
        plain,
    );
    server.wait_serving();
    (server, plain, format!("127.0.0.1:{tls}").parse().unwrap())
}

#[test]
fn galaxys_shared_socket_layout_serves_http_and_https() {
    let ca = Ca::new();
    let (server, plain, tls) = galaxy_layout(&ca, "http");
    let r = server.get("/plain");
    assert_eq!(r.status, 200, "{}", r.text());
    let mut c = tls_connect(tls, &ca.client()).unwrap();
    let env = environ(&get(&mut c, "/secure"));
    assert_eq!(env["wsgi.url_scheme"], "https");
    let status = server.status().unwrap();
    let names: Vec<String> = status
        .listeners
        .iter()
        .map(|l| format!("{}={}", l.name, l.addr))
        .collect();
    assert_eq!(
        names,
        vec![format!("http:0={plain}"), format!("https:0={tls}")]
    );
    drop(server);

    // `http-to-https: =0` instead of `http: =0`: the plain port sends clients to the TLS one.
    let (server, plain, tls) = galaxy_layout(&ca, "http-to-https");
    let mut c = Client::connect(plain);
    c.send(&format!(
        "GET /login HTTP/1.1\r\nHost: localhost:{}\r\n\r\n",
        plain.port()
    ));
    let r = c.response();
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some(format!("https://localhost:{}/login", tls.port()).as_str())
    );
    drop(server);
}
