//! The demo writes a CA private key to a temporary folder: whichever way it exits, the folder goes. Here it
//! exits early because its HTTP port is already taken.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn a_failed_bind_removes_the_temporary_folder() {
    // The port the demo will fail to bind: taken here, on loopback, chosen by the system.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    // The demo's temporary folder goes under a folder of this test's own, so that what is left is visible.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("demo-cleanup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis-demo"))
        .args(["--http-port", &port.to_string(), "--https-port", "0"])
        .env("TMPDIR", &tmp)
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not exit within 60 s with its port taken");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    drop(taken);

    assert!(!status.success(), "the demo cannot serve on a taken port");
    assert!(
        stderr.contains("127.0.0.1") && stderr.contains(&port.to_string()),
        "the error names the address: {stderr}"
    );
    let left = entries(&tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(left.is_empty(), "the demo left {left:?} in its temporary folder; stderr: {stderr}");
}
