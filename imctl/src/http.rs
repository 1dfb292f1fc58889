//! The HTTP API: JSON in, JSON out, and the server's `{"msg": …}` as the error.

use anyhow::{Context, bail};
use serde_json::Value;

pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// The API at `server`; over TLS with `tls` (for an `https://` server).
    pub fn new(server: &str, tls: Option<improto::rustls::ClientConfig>) -> anyhow::Result<Self> {
        let mut http = reqwest::Client::builder().timeout(crate::WAIT);
        if let Some(tls) = tls {
            http = http.use_preconfigured_tls(tls);
        }
        Ok(Api {
            base: server.trim_end_matches('/').to_owned(),
            http: http.build().context("cannot set up the HTTP client")?,
        })
    }

    pub async fn get(&self, path: &str, token: &str) -> anyhow::Result<Value> {
        let request = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token);
        answer(request, LOG_IN).await
    }

    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request, LOG_IN).await
    }

    /// A call of the admin API, with the operators' token.
    pub async fn admin(&self, path: &str, admin_token: &str) -> anyhow::Result<Value> {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(admin_token);
        answer(request, "check --admin-token (IMCTL_ADMIN_TOKEN)").await
    }
}

/// What to do about a `401` from the user's routes.
const LOG_IN: &str = "log in again (imctl login)";

async fn answer(request: reqwest::RequestBuilder, on_401: &str) -> anyhow::Result<Value> {
    let reply = request
        .send()
        .await
        .context("cannot reach the server's HTTP API")?;
    let status = reply.status();
    let body: Value = reply.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let why = body["msg"].as_str().unwrap_or("no reason given");
        if status == reqwest::StatusCode::UNAUTHORIZED {
            bail!("{why} ({status}): {on_401}");
        }
        bail!("{why} ({status})");
    }
    Ok(body)
}
