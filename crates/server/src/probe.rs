//! `recarga probe` (hidden): the container's `HEALTHCHECK`. It asks the
//! gateway on this machine for `/health` over plain HTTP/1.1 and exits 0 only
//! on a 200 (the route answers 503 when the database does not), so the image
//! needs no curl. It opens no database and reads no other setting.

use clap::Args;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Most bytes read looking for the status line.
pub const HEAD_MAX: usize = 1024;

/// Where the probe looks.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Port of the gateway (the same `PORT` as `serve`).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Host to ask (the gateway listens on every address by default).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Path that must answer 200.
    #[arg(long, default_value = "/health")]
    pub path: String,
    /// Longest time for the whole exchange (s).
    #[arg(long, default_value_t = 5)]
    pub timeout_s: u64,
}

/// The status code of an HTTP/1.x response head (`HTTP/1.1 200 OK\r\n…`).
pub fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    let code = parts.next()?;
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// One GET of `args.path`; the status code, or why there is none.
pub async fn get_status(args: &ProbeArgs) -> Result<u16, String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((args.host.as_str(), args.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: recarga-probe\r\nConnection: close\r\n\r\n",
            args.path, args.host
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("cannot send: {e}"))?;
        let mut head = Vec::with_capacity(HEAD_MAX);
        let mut buf = [0_u8; 256];
        while !head.contains(&b'\n') && head.len() < HEAD_MAX {
            let n = stream.read(&mut buf).await.map_err(|e| format!("cannot read: {e}"))?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        status_code(&head).ok_or_else(|| "the answer is not HTTP/1.x".to_string())
    };
    tokio::time::timeout(Duration::from_secs(args.timeout_s), exchange)
        .await
        .map_err(|_| format!("no answer within {} s", args.timeout_s))?
}

/// Runs the probe; prints one line and returns the exit code (0 on a 200).
pub async fn run(args: &ProbeArgs) -> i32 {
    let target = format!("http://{}:{}{}", args.host, args.port, args.path);
    match get_status(args).await {
        Ok(200) => {
            println!("{target}: 200");
            0
        }
        Ok(code) => {
            eprintln!("{target}: {code}");
            1
        }
        Err(why) => {
            eprintln!("{target}: {why}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_strictly() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\ncontent-type: x\r\n"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(status_code(b"HTTP/1.1 204\r\n"), Some(204));
        for bad in [
            &b""[..],
            b"SSH-2.0-OpenSSH\r\n",
            b"HTTP/1.1 2000 OK\r\n",
            b"HTTP/2 200\r\n",
            b"HTTP/1.1 OK 200\r\n",
        ] {
            assert_eq!(status_code(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test]
    async fn a_closed_port_or_a_silent_server_fails() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let args = ProbeArgs {
            port,
            host: "127.0.0.1".into(),
            path: "/health".into(),
            timeout_s: 1,
        };
        // Accepts but never answers: the probe gives up in time.
        let err = get_status(&args).await.unwrap_err();
        assert!(err.contains("no answer"), "{err}");
        drop(listener);
        assert_eq!(run(&args).await, 1);
    }
}
