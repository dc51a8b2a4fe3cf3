//! The limits a request's head and body are held to ([`HeadLimits`], from `[limits]`)
//! and the one a request broke ([`Violation`]): its status, its rejection counter and
//! the response body that explains it. Shared by the framing scanner (`limits`), the
//! head checks (`head`), the IO and the connection.

use crate::config::Limits;
use crate::shared::scoreboard::Rejection;

/// The limits the scanner enforces, from `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    pub request_line: usize,
    pub fields: usize,
    pub field_size: usize,
    pub max_body: u64,
}

impl HeadLimits {
    pub fn from_config(limits: &Limits) -> HeadLimits {
        HeadLimits {
            request_line: limits.request_line,
            fields: limits.request_fields,
            field_size: limits.request_field_size,
            max_body: limits.max_body,
        }
    }

    /// The most bytes a head within the limits can take (with CRLFs), for hyper's
    /// buffer, which must hold a whole head.
    pub fn max_head_bytes(&self) -> usize {
        self.request_line
            .saturating_add(2)
            .saturating_add(
                self.fields
                    .saturating_mul(self.field_size.saturating_add(2)),
            )
            .saturating_add(2)
    }
}

/// A limit a request broke, or framing the scanner refuses to guess at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    RequestLine,
    TooManyFields,
    FieldTooLarge,
    BodyTooLarge,
    /// Framing that hyper might read differently, or not at all: 400.
    Malformed(&'static str),
    /// The request body sent nothing for `body_read_timeout`: 408 (set by the IO).
    BodyTimeout,
}

impl Violation {
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Violation::RequestLine => (414, "URI Too Long"),
            Violation::TooManyFields | Violation::FieldTooLarge => {
                (431, "Request Header Fields Too Large")
            }
            Violation::BodyTooLarge => (413, "Content Too Large"),
            Violation::Malformed(_) => (400, "Bad Request"),
            Violation::BodyTimeout => (408, "Request Timeout"),
        }
    }

    pub fn rejection(self) -> Rejection {
        match self {
            Violation::RequestLine => Rejection::RequestLine,
            Violation::TooManyFields => Rejection::RequestFields,
            Violation::FieldTooLarge => Rejection::RequestFieldSize,
            Violation::BodyTooLarge => Rejection::MaxBody,
            Violation::Malformed(_) => Rejection::Malformed,
            Violation::BodyTimeout => Rejection::BodyReadTimeout,
        }
    }

    /// The response body: which limit, and its value.
    pub fn explain(self, limits: &HeadLimits) -> String {
        match self {
            Violation::RequestLine => format!(
                "request line longer than {} bytes (limits.request_line)\n",
                limits.request_line
            ),
            Violation::TooManyFields => format!(
                "more than {} header fields (limits.request_fields)\n",
                limits.fields
            ),
            Violation::FieldTooLarge => format!(
                "a header field longer than {} bytes (limits.request_field_size)\n",
                limits.field_size
            ),
            Violation::BodyTooLarge => format!(
                "request body larger than {} bytes (limits.max_body)\n",
                limits.max_body
            ),
            Violation::Malformed(what) => format!("malformed request: {what}\n"),
            Violation::BodyTimeout => {
                "the request body stalled (limits.body_read_timeout)\n".to_string()
            }
        }
    }
}
