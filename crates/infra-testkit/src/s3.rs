//! An S3-compatible store for tests: moto (PyPI `moto[server]`) in server
//! mode on a free loopback port, with one bucket. It can be stopped and
//! started again on the same port, as an outage would.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::{free_port, tail};

pub struct S3 {
    pub port: u16,
    pub bucket: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3").field("port", &self.port).finish()
    }
}

impl S3 {
    /// Starts moto and creates `bucket`.
    pub fn start(bucket: &str) -> anyhow::Result<S3> {
        let mut s = S3 {
            port: free_port(),
            bucket: bucket.to_owned(),
            dir: tempfile::Builder::new().prefix("infra-s3-").tempdir()?,
            child: None,
        };
        s.start_again()?;
        let (status, body) = s.curl("PUT", bucket)?;
        if status != 200 {
            bail!("creating bucket {bucket}: {status} {}", String::from_utf8_lossy(&body));
        }
        Ok(s)
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment the server needs to reach it (any credentials do).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The object's bytes, if it is there.
    pub fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let out = self.boto(
            "import sys\ntry:\n    sys.stdout.buffer.write(s3.get_object(Bucket=B, Key=K)['Body'].read())\nexcept s3.exceptions.NoSuchKey:\n    sys.exit(3)\n",
            key,
            None,
        )?;
        match out.status.code() {
            Some(0) => Ok(Some(out.stdout)),
            Some(3) => Ok(None),
            _ => bail!("get {key}: {}", String::from_utf8_lossy(&out.stderr)),
        }
    }

    /// Replaces an object behind the server's back.
    pub fn put(&self, key: &str, body: &[u8]) -> anyhow::Result<()> {
        let out = self.boto(
            "import sys\ns3.put_object(Bucket=B, Key=K, Body=sys.stdin.buffer.read())\n",
            key,
            Some(body),
        )?;
        anyhow::ensure!(
            out.status.success(),
            "put {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Runs `code` with boto3 (signed requests, as a real client makes),
    /// `s3`, `B` (the bucket) and `K` (`key`) defined.
    fn boto(&self, code: &str, key: &str, stdin: Option<&[u8]>) -> anyhow::Result<std::process::Output> {
        use std::io::Write as _;
        let prelude = format!(
            "import boto3, os\ns3 = boto3.client('s3', endpoint_url={:?}, region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\nB = {:?}\nK = os.environ['KEY']\n",
            self.endpoint(),
            self.bucket
        );
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(format!("{prelude}{code}"))
            .env("KEY", key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run python3 with boto3")?;
        let mut sin = child.stdin.take().context("stdin")?;
        sin.write_all(stdin.unwrap_or_default())?;
        drop(sin);
        Ok(child.wait_with_output()?)
    }

    /// One unsigned request (moto takes them for buckets), with curl: the
    /// status and the body.
    fn curl(&self, method: &str, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let out_file = self.dir.path().join("curl.out");
        let out = Command::new("curl")
            .args(["-s", "-X", method, "-o"])
            .arg(&out_file)
            .args(["-w", "%{http_code}"])
            .arg(format!("{}/{path}", self.endpoint()))
            .output()
            .context("run curl")?;
        let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
        Ok((status, std::fs::read(&out_file).unwrap_or_default()))
    }

    /// Freezes it (SIGSTOP): connections open and then nothing answers,
    /// the nastier kind of outage. Its objects stay.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets it run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args([sig, &c.id().to_string()]).status();
        }
    }

    /// Stops it (its data goes with it: moto keeps objects in memory).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it (again) on the same port.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.path().join("moto.log"))?;
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start moto_server (pip install 'moto[server]')")?;
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("moto did not listen:\n{}", tail(&self.dir.path().join("moto.log"), 20))
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.resume();
        self.stop();
    }
}
