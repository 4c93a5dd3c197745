//! Money, exactly: ISO 4217 currencies with the number of decimals each has, and prices in
//! integer minor units (cents). No float ever holds an amount; a decimal is only ever made from
//! minor units and the currency's exponent, so `1200` USD is `12.00` and `1200` JPY is `1200`.
//!
//! The catalog (the inventory service) takes prices in and the order service prices orders with
//! them, so both read currencies from this one table.

use rust_decimal::Decimal;

/// A currency the shop can price in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency {
    /// The ISO 4217 code: `USD`.
    pub code: &'static str,
    /// How many decimals its amounts have: 2 for USD, 0 for JPY, 3 for KWD.
    pub exponent: u32,
}

/// ISO 4217's minor units for the currencies a card processor commonly settles.
const CURRENCIES: &[(&str, u32)] = &[
    ("AUD", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MXN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PLN", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("TND", 3),
    ("USD", 2),
    ("VND", 0),
    ("ZAR", 2),
];

/// The most one unit may cost, in minor units (a billion dollars): far above any shop's price,
/// and small enough that an order's total (at most 100 lines of 10,000 units) fits an `i64`.
pub const MAX_PRICE_MINOR: i64 = 100_000_000_000;

impl Currency {
    /// The currency with ISO code `code` (upper case), if the shop knows it.
    pub fn parse(code: &str) -> Result<Self, String> {
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|&(code, exponent)| Currency { code, exponent })
            .ok_or_else(|| format!("{code:?} is not an ISO 4217 currency the shop prices in"))
    }

    /// `minor` units as a decimal with exactly this currency's decimals: 1200 USD is 12.00.
    pub fn to_decimal(self, minor: i64) -> Decimal {
        Decimal::new(minor, self.exponent)
    }

    /// `amount` in minor units, if it has no more decimals than this currency: 12.00 USD is 1200.
    pub fn to_minor(self, amount: Decimal) -> Result<i64, String> {
        let minor = amount * Decimal::from(10i64.pow(self.exponent));
        if minor.fract() != Decimal::ZERO {
            return Err(format!("{amount} has more decimals than {} has", self.code));
        }
        i64::try_from(minor.trunc()).map_err(|_| format!("{amount} is out of range"))
    }

    /// Reads a price written as a decimal (`"12.00"`, `"12"`), into minor units. Refuses a price
    /// of zero or less, one with more decimals than the currency has, and one above
    /// [`MAX_PRICE_MINOR`].
    pub fn parse_price(self, text: &str) -> Result<i64, String> {
        let price = Decimal::from_str_exact(text.trim())
            .map_err(|_| format!("{text:?} is not an exact decimal"))?;
        if price <= Decimal::ZERO {
            return Err("must be more than zero".into());
        }
        if price.normalize().scale() > self.exponent {
            return Err(match self.exponent {
                0 => format!("{} has no decimals", self.code),
                n => format!("{} has at most {n} decimals", self.code),
            });
        }
        let minor = price * Decimal::from(10i64.pow(self.exponent));
        i64::try_from(minor.trunc())
            .ok()
            .filter(|m| *m <= MAX_PRICE_MINOR)
            .ok_or_else(|| {
                format!(
                    "must be at most {}",
                    self.to_decimal(MAX_PRICE_MINOR).normalize()
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::parse("USD").expect("USD")
    }

    #[test]
    fn a_price_becomes_minor_units_in_its_currency() {
        assert_eq!(usd().parse_price("12.00"), Ok(1200));
        assert_eq!(usd().parse_price("12"), Ok(1200));
        assert_eq!(usd().parse_price("0.01"), Ok(1));
        let jpy = Currency::parse("JPY").expect("JPY");
        assert_eq!(jpy.parse_price("1200"), Ok(1200));
        let kwd = Currency::parse("KWD").expect("KWD");
        assert_eq!(kwd.parse_price("1.005"), Ok(1005));
    }

    #[test]
    fn a_price_with_more_decimals_than_its_currency_is_refused() {
        assert!(usd().parse_price("12.001").is_err());
        assert!(
            Currency::parse("JPY")
                .expect("JPY")
                .parse_price("1.5")
                .is_err()
        );
        // Trailing zeros are not decimals the currency lacks.
        assert_eq!(usd().parse_price("12.5000"), Ok(1250));
    }

    #[test]
    fn a_price_is_more_than_zero_and_written_exactly() {
        for bad in ["0", "0.00", "-1", "1e3", "NaN", "", "12,00"] {
            assert!(usd().parse_price(bad).is_err(), "{bad:?}");
        }
        assert!(usd().parse_price("1000000001").is_err());
    }

    #[test]
    fn minor_units_read_back_with_the_currencys_decimals() {
        assert_eq!(usd().to_decimal(1200).to_string(), "12.00");
        assert_eq!(
            Currency::parse("JPY")
                .expect("JPY")
                .to_decimal(1200)
                .to_string(),
            "1200"
        );
    }

    #[test]
    fn an_amount_becomes_minor_units_only_when_exact() {
        assert_eq!(usd().to_minor(Decimal::new(21_0000, 4)), Ok(2100));
        assert!(usd().to_minor(Decimal::new(1, 3)).is_err());
    }

    #[test]
    fn only_known_iso_codes_are_currencies() {
        assert!(Currency::parse("usd").is_err());
        assert!(Currency::parse("XXX").is_err());
        assert!(Currency::parse("US").is_err());
    }
}
