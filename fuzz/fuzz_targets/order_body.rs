//! The body of `POST /api/orders`: any bytes are parsed as the API parses them, validated, then
//! priced from a catalog that holds currencies of 0, 2 and 3 decimals and the highest price the
//! catalog takes. Nothing may panic, and a priced order has every line, in one currency, and a
//! total above zero with exactly that currency's decimals.
#![no_main]

use std::{collections::HashMap, sync::LazyLock};

use libfuzzer_sys::fuzz_target;
use oms_api::{
    domain::{OrderRequest, PlaceOrder},
    prices::Price,
};
use oms_saga::money::{Currency, MAX_PRICE_MINOR};

static CATALOG: LazyLock<HashMap<String, Price>> = LazyLock::new(|| {
    [
        ("A", 1, "USD", true),
        ("B", MAX_PRICE_MINOR, "USD", true),
        ("C", 1200, "JPY", true),
        ("D", 1005, "KWD", true),
        ("E", 500, "USD", false),
    ]
    .into_iter()
    .map(|(product_id, price_minor, currency, active)| {
        let price = Price {
            product_id: product_id.to_owned(),
            price_minor,
            currency: currency.to_owned(),
            active,
        };
        (product_id.to_owned(), price)
    })
    .collect()
});

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<PlaceOrder>(data) else {
        return;
    };
    let Ok(request) = OrderRequest::parse(request) else {
        return;
    };
    let lines = request.items.len();
    let customer = request.customer_id.unwrap_or_default();
    let Ok(order) = request.price(customer, &CATALOG) else {
        return;
    };
    assert_eq!(order.items.len(), lines, "a line went missing");
    let currency = Currency::parse(&order.currency).expect("a currency of the catalog");
    let total = order.total();
    assert!(total.is_sign_positive() && !total.is_zero(), "total {total}");
    assert_eq!(total.scale(), currency.exponent, "total {total} in {}", currency.code);
});
