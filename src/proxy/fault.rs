//! The one mapping of the core's errors to HTTP: a status by whose fault it is, and npm's
//! `{"error": …}` with the core's message (a 401 also says how to authenticate).

use sluice_plugin_api::NpmRequest;

use crate::api::Answer;
use crate::core::Error;
use crate::upstream::UpstreamError;

pub use crate::api::answer::status;

/// The answer to `request` that failed with `error`.
pub fn answer(request: Option<&NpmRequest>, error: &Error) -> Answer {
    let what = request
        .and_then(NpmRequest::package)
        .unwrap_or("the request");
    let status = status(error.fault());
    match error {
        Error::Refused(response) => Answer::plugin(response.clone()),
        Error::Unauthenticated(message) => Answer::plugin(
            sluice_plugin_api::Response::error(status, message.clone()).with_header(
                "www-authenticate",
                "Bearer realm=\"sluice\", Basic realm=\"sluice\"",
            ),
        ),
        // npm prompts for the code (or reads `--otp`) and sends the write again with it.
        Error::OtpRequired(message) => Answer::plugin(
            sluice_plugin_api::Response::error(status, message.clone())
                .with_header("www-authenticate", "OTP"),
        ),
        Error::Upstream(UpstreamError::Integrity(_)) | Error::Packument { .. } => {
            Answer::error(status, error.to_string())
        }
        Error::Upstream(e) => Answer::error(
            status,
            format!("{e}; {what} is not in sluice's store yet, try again later"),
        ),
        Error::Store(e) => {
            tracing::error!(error = %e, "store failure");
            Answer::error(
                status,
                format!("sluice's store failed ({e}); try again later"),
            )
        }
        Error::Internal(_) | Error::Plugin(_) => {
            tracing::error!(%error, "internal error");
            Answer::error(status, error.to_string())
        }
        _ => Answer::error(status, error.to_string()),
    }
}
