//! The reports: what the reporting API serves for (client, day), how a report is converted
//! (currency with a rates table, mass units to grams), and where it is stored.

use serde::{Deserialize, Serialize};

/// The first reporting day; day `d` is this date plus `d` days.
pub const FIRST_DAY: (i64, u32, u32) = (2026, 1, 1);

/// US-dollar rates: `(currency, numerator, denominator)`, one unit is `numerator /
/// denominator` dollars. Exact rationals, so converted cents are exact integers.
pub const USD_RATES: [(&str, i64, i64); 5] = [
    ("USD", 1, 1),
    ("EUR", 108, 100),
    ("GBP", 127, 100),
    ("CHF", 113, 100),
    ("SEK", 96, 1000),
];

/// Nanograms per mass unit (exact integers, so converted masses are exact).
pub const NANOGRAMS_PER: [(&str, u64); 4] = [
    ("g", 1_000_000_000),
    ("kg", 1_000_000_000_000),
    ("oz", 28_349_523_125),
    ("lb", 453_592_370_000),
];

/// One line of a report as the API serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawRow {
    /// Article code.
    pub sku: String,
    /// Revenue in the report's currency, in hundredths.
    pub revenue_minor: i64,
    /// Mass shipped, in `unit`.
    pub quantity: u32,
    /// The mass unit (`g`, `kg`, `oz` or `lb`).
    pub unit: String,
}

/// A report as the API serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawReport {
    /// The client.
    pub client: u32,
    /// The date, `YYYY-MM-DD`.
    pub date: String,
    /// The currency of every revenue in the report.
    pub currency: String,
    /// The lines.
    pub rows: Vec<RawRow>,
}

/// One converted line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Article code.
    pub sku: String,
    /// Revenue in US cents (rounded half up).
    pub revenue_usd_cents: i64,
    /// Mass shipped in milligrams (rounded half up).
    pub mass_mg: u64,
}

/// A converted report, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The client.
    pub client: u32,
    /// The date, `YYYY-MM-DD`.
    pub date: String,
    /// The currency the API reported in.
    pub source_currency: String,
    /// The lines.
    pub rows: Vec<Row>,
    /// The sum of the lines' revenue in US cents.
    pub total_usd_cents: i64,
}

/// A conversion that cannot succeed (retrying will not help).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The rates table has no rate for the currency.
    #[error("report {client}/{date}: no USD rate for currency {currency:?}")]
    UnknownCurrency {
        /// The client.
        client: u32,
        /// The date.
        date: String,
        /// The currency.
        currency: String,
    },
    /// A line has a mass unit the conversion does not know.
    #[error("report {client}/{date}: line {line}: unknown mass unit {unit:?}")]
    UnknownUnit {
        /// The client.
        client: u32,
        /// The date.
        date: String,
        /// The line index.
        line: usize,
        /// The unit.
        unit: String,
    },
}

/// Converts a raw report.
pub fn convert(raw: &RawReport) -> Result<Report, ConvertError> {
    let (_, num, den) = USD_RATES
        .iter()
        .find(|(c, _, _)| *c == raw.currency)
        .ok_or_else(|| ConvertError::UnknownCurrency {
            client: raw.client,
            date: raw.date.clone(),
            currency: raw.currency.clone(),
        })?;
    let mut rows = Vec::with_capacity(raw.rows.len());
    let mut total = 0i64;
    for (line, r) in raw.rows.iter().enumerate() {
        let (_, nanograms) = NANOGRAMS_PER
            .iter()
            .find(|(u, _)| *u == r.unit)
            .ok_or_else(|| ConvertError::UnknownUnit {
                client: raw.client,
                date: raw.date.clone(),
                line,
                unit: r.unit.clone(),
            })?;
        let cents = (r.revenue_minor * num * 2 + den).div_euclid(den * 2);
        total += cents;
        rows.push(Row {
            sku: r.sku.clone(),
            revenue_usd_cents: cents,
            mass_mg: (u64::from(r.quantity) * nanograms + 500_000) / 1_000_000,
        });
    }
    Ok(Report {
        client: raw.client,
        date: raw.date.clone(),
        source_currency: raw.currency.clone(),
        rows,
        total_usd_cents: total,
    })
}

/// The date of day `day` (0 = [`FIRST_DAY`]), `YYYY-MM-DD`.
pub fn date_of(day: u32) -> String {
    // Days from 1970-01-01 to FIRST_DAY, then back to a civil date (H. Hinnant's algorithms).
    let (y, m, d) = FIRST_DAY;
    let days = days_from_civil(y, m, d) + i64::from(day);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The object key of a converted report, relative to the output prefix.
pub fn object_key(client: u32, day: u32) -> String {
    format!("reports/date={}/client={client:05}.json", date_of(day))
}

/// A deterministic pseudo-random number for `(client, day, salt)` (SplitMix64).
pub fn mix(client: u32, day: u32, salt: u64) -> u64 {
    let mut z =
        (u64::from(client) << 32 | u64::from(day)) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The report the API serves for `(client, day)`: a pure function of both.
pub fn raw_report(client: u32, day: u32) -> RawReport {
    let seed = mix(client, day, 1);
    let currency = USD_RATES[(seed % USD_RATES.len() as u64) as usize].0;
    let lines = 3 + (seed >> 8) % 10;
    let rows = (0..lines)
        .map(|i| {
            let r = mix(client, day, 100 + i);
            RawRow {
                sku: format!("SKU-{:04}", r % 10_000),
                revenue_minor: ((r >> 16) % 1_000_000) as i64,
                quantity: ((r >> 40) % 5_000) as u32 + 1,
                unit: NANOGRAMS_PER[((r >> 56) % NANOGRAMS_PER.len() as u64) as usize]
                    .0
                    .to_string(),
            }
        })
        .collect();
    RawReport {
        client,
        date: date_of(day),
        currency: currency.to_string(),
        rows,
    }
}

/// Whether the API answers `404 Not Found` for `(client, day)`, with `gone_rate` the
/// fraction of such reports (a pure function, so tests know which).
pub fn is_gone(client: u32, day: u32, gone_rate: f64) -> bool {
    gone_rate > 0.0 && (mix(client, day, 7) % 1_000_000) as f64 / 1_000_000.0 < gone_rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_count_from_the_first_day() {
        assert_eq!(date_of(0), "2026-01-01");
        assert_eq!(date_of(31), "2026-02-01");
        assert_eq!(date_of(59), "2026-03-01");
        assert_eq!(date_of(365), "2027-01-01");
    }

    #[test]
    fn conversion_uses_the_rates_and_rounds_half_up() {
        let raw = RawReport {
            client: 1,
            date: "2026-01-01".into(),
            currency: "EUR".into(),
            rows: vec![RawRow {
                sku: "A".into(),
                revenue_minor: 1_050,
                quantity: 2,
                unit: "lb".into(),
            }],
        };
        let r = convert(&raw).unwrap();
        assert_eq!(r.rows[0].revenue_usd_cents, 1_134);
        assert_eq!(r.rows[0].mass_mg, 907_185);
        let mut bad = raw.clone();
        bad.currency = "XTS".into();
        assert!(matches!(
            convert(&bad),
            Err(ConvertError::UnknownCurrency { .. })
        ));
    }
}
