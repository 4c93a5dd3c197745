//! The body of `POST /api/orders`: any bytes are parsed as the API parses them, then validated.
//! Nothing may panic, and a valid order must total without overflow and survive a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oms_api::domain::{NewOrder, PlaceOrder};

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<PlaceOrder>(data) else {
        return;
    };
    let Ok(order) = NewOrder::parse(request) else {
        return;
    };
    let total = order.total();
    assert!(
        !total.is_sign_negative() || total.is_zero(),
        "a negative total: {total}"
    );
    // What the API stores and publishes reads back as the same order.
    let json = serde_json::to_value(&order).expect("serialises");
    let again: PlaceOrder = serde_json::from_value(json).expect("reads back");
    assert_eq!(NewOrder::parse(again).expect("still valid"), order);
});
