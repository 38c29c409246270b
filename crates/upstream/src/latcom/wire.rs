//! Latcom's wire format, kept apart from our domain types.
//!
//! Field names are Latcom's (`targetMSISDN`, `dist_transid`, `productId`, …).
//! Responses are parsed leniently: every field is optional and numbers may
//! arrive as strings, because the provider publishes no specification and
//! we must never fail to *record* an answer just because its shape moved.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

pub const LOGIN_PATH: &str = "/api/dislogin";
pub const TOPUP_PATH: &str = "/api/tn/fast";
/// Followed by `/{transId}`.
pub const STATUS_PATH: &str = "/api/transaction";

pub const OPERATOR: &str = "TELEFONICA";
pub const COUNTRY: &str = "MEXICO";
pub const CURRENCY: &str = "MXN";
pub const SKU_TOPUP: &str = "0";
pub const SERVICE_TOPUP: u8 = 2;

/// The login's answer when the caller's IP is not on Latcom's allow-list.
pub const IP_NOT_AUTHORIZED: &str = "IP Address not authorized";
/// `vendorResponseCode` of a `Fail` meaning *our* prepaid wallet at Latcom
/// is empty ("balance not sufficient for Pouch(Wallet)"): nothing was
/// delivered, and every top-up fails the same way until it is funded.
pub const WALLET_EMPTY_CODE: &str = "-120008";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    pub dist_api: String,
    pub user_uid: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    pub access: String,
}

/// Latcom's error body, e.g. `{"error":"Validation Error","message":"IP Address
/// not authorized","status":400,"timestamp":"…"}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub status: Option<Value>,
    #[serde(default)]
    pub timestamp: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopupRequest {
    #[serde(rename = "targetMSISDN")]
    pub target_msisdn: String,
    pub dist_transid: String,
    pub operator: String,
    pub country: String,
    pub currency: String,
    /// A JSON number in MXN, written from centavos as exact text (`20`, `21.98`).
    pub amount: Box<RawValue>,
    #[serde(rename = "productId")]
    pub product_id: String,
    #[serde(rename = "skuID")]
    pub sku_id: String,
    pub service: u8,
}

/// The top-up answer. HTTP 200 for both success and failure: `status` says which.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopupResponse {
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub amount: Option<Value>,
    #[serde(default)]
    pub product_id: Option<String>,
    #[serde(default)]
    pub service: Option<Value>,
    #[serde(default)]
    pub trans_id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub ven_transid: Option<String>,
    #[serde(default)]
    pub response_code: Option<Value>,
    #[serde(default)]
    pub response_message: Option<String>,
    #[serde(default)]
    pub vendor_response_msg: Option<String>,
    #[serde(default)]
    pub vendor_response_code: Option<Value>,
    #[serde(default)]
    pub dist_transid: Option<String>,
    #[serde(default)]
    pub ended_at: Option<String>,
}

/// A code that may arrive as a JSON string or number, as text.
pub fn code_text(v: &Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// `"Success"` / `"Fail"` compared case-insensitively; anything else is `None`.
pub fn is_success(status: Option<&str>) -> Option<bool> {
    match status.map(|s| s.trim().to_ascii_lowercase()) {
        Some(s) if s == "success" => Some(true),
        Some(s) if s == "fail" || s == "failed" => Some(false),
        _ => None,
    }
}

/// Reads the `exp` claim (seconds since the epoch) of a JWT without verifying
/// it: we only need to know when to refresh, the server does the verifying.
pub fn jwt_exp(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64url_decode(payload)?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_i64()
}

/// Unpadded base64url, as JWTs use (padding, if a token carries it, is dropped).
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

/// Unpadded base64url encoding (used by the simulator to mint tokens).
pub fn base64url_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips() {
        for s in ["", "a", "ab", "abc", "abcd", "{\"exp\":1764000000}"] {
            assert_eq!(base64url_decode(&base64url_encode(s.as_bytes())).unwrap(), s.as_bytes());
        }
    }

    #[test]
    fn reads_the_exp_claim() {
        let token = format!("h.{}.s", base64url_encode(br#"{"sub":"x","exp":1764000000}"#));
        assert_eq!(jwt_exp(&token), Some(1_764_000_000));
        assert_eq!(jwt_exp("not-a-jwt"), None);
        let no_exp = format!("h.{}.s", base64url_encode(br#"{"sub":"x"}"#));
        assert_eq!(jwt_exp(&no_exp), None);
    }

    #[test]
    fn parses_the_documented_answer() {
        let body = r#"{"uid":"c9c3a127","amount":10,"productId":"XOOM_10_MXN","service":2,"transId":"LT48966777",
            "status":"Success","createdAt":"2025-10-04T08:44:46.915215047-04:00","venTransid":"887766",
            "responseCode":"0","responseMessage":"Top-up successful","vendorResponseMsg":"Success",
            "vendorResponseCode":"0","distTransid":"RLR1","endedAt":"2025-10-04T08:44:46.929166111-04:00"}"#;
        let r: TopupResponse = serde_json::from_str(body).unwrap();
        assert_eq!(r.trans_id.as_deref(), Some("LT48966777"));
        assert_eq!(r.ven_transid.as_deref(), Some("887766"));
        assert_eq!(is_success(r.status.as_deref()), Some(true));
        assert_eq!(code_text(&r.vendor_response_code).as_deref(), Some("0"));
        assert_eq!(is_success(Some("FAIL")), Some(false));
        assert_eq!(is_success(Some("pending")), None);
        let coded: TopupResponse = serde_json::from_str(r#"{"status":"Fail","vendorResponseCode":-120054}"#).unwrap();
        assert_eq!(code_text(&coded.vendor_response_code).as_deref(), Some("-120054"));
    }
}
