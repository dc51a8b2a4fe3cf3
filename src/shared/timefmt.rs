//! UTC timestamps as logs and HTTP want them (common log format, RFC 3339, HTTP-date),
//! from `SystemTime` with the days-to-civil-date conversion, so no date crate is needed.

use std::time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// A UTC calendar time broken into fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
    /// Days since 1970-01-01 (a Thursday).
    days: i64,
}

impl Utc {
    pub fn from_system(time: SystemTime) -> Utc {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        Utc::from_unix_millis(since.as_millis() as i64)
    }

    pub fn from_unix_millis(millis: i64) -> Utc {
        let secs = millis.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let of_day = secs.rem_euclid(86_400);
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Utc {
            year,
            month,
            day,
            hour: (of_day / 3600) as u32,
            minute: (of_day / 60 % 60) as u32,
            second: (of_day % 60) as u32,
            millis: millis.rem_euclid(1000) as u32,
            days,
        }
    }

    /// `23/Nov/2026:09:09:27 +0000` (the common log format's time, without brackets).
    pub fn common_log(&self) -> String {
        format!(
            "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
            self.day,
            MONTHS[self.month as usize - 1],
            self.year,
            self.hour,
            self.minute,
            self.second
        )
    }

    /// `2026-11-23T09:09:27.123Z`
    pub fn rfc3339_millis(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.millis
        )
    }

    /// `Mon, 23 Nov 2026 09:09:27 GMT` (HTTP's Date header).
    pub fn http_date(&self) -> String {
        format!(
            "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
            WEEKDAYS[self.days.rem_euclid(7) as usize],
            self.day,
            MONTHS[self.month as usize - 1],
            self.year,
            self.hour,
            self.minute,
            self.second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        let t = Utc::from_unix_millis(0);
        assert_eq!(t.rfc3339_millis(), "1970-01-01T00:00:00.000Z");
        assert_eq!(t.http_date(), "Thu, 01 Jan 1970 00:00:00 GMT");
        // 2000-02-29 12:34:56.789 UTC (a leap day).
        let t = Utc::from_unix_millis(951_827_696_789);
        assert_eq!(t.rfc3339_millis(), "2000-02-29T12:34:56.789Z");
        assert_eq!(t.common_log(), "29/Feb/2000:12:34:56 +0000");
        assert_eq!(t.http_date(), "Tue, 29 Feb 2000 12:34:56 GMT");
        // 2026-11-23 09:09:27 UTC.
        let t = Utc::from_unix_millis(1_795_424_967_000);
        assert_eq!(t.common_log(), "23/Nov/2026:09:09:27 +0000");
        assert_eq!(t.http_date(), "Mon, 23 Nov 2026 09:09:27 GMT");
    }
}
