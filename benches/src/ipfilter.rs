//! The IP filter: the per-request cost of `portcullis_ip::IpFilterLayer` with 100 000 rules, called
//! directly (no server), over an inner service that answers at once.
//!
//! The inner service hands the request back to the loop (through a shared slot) and answers an empty
//! response, so one request (its `Decisions` extension already in place, as the client-address layer
//! leaves it) is reused for every iteration, and each iteration sets a different client address from 4096
//! allowed ones. Both loops do exactly the same
//! work except the filter: reading the client address, loading the rule snapshot (arc-swap), the table
//! lookup and the body/future wrapping.
//!
//! Figures:
//! - `filter_allow_100k`: one allowed request through the filter with 100k rules (ns);
//! - `filter_baseline`: the same loop calling the inner service directly (ns);
//! - `filter_overhead`: the difference (target ≤ 150 ns);
//! - `allocs_allow_path`: allocations per allowed request through the filter (target 0; the request's
//!   shared `Decisions` extension is created before and not counted).

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use portcullis_core::{ClientAddr, Decisions, GateBody, IpRange, LearntVia};
use portcullis_ip::{Action, IpFilter, IpRules, IpRulesHandle};
use tower_service::Service;

use crate::alloc::count_allocs;
use crate::stats::{Rng, median_ns, report};

const RULES: usize = 100_000;
const CLIENTS: usize = 4096;
const BATCHES: usize = 15;
const ITERS: usize = 200_000;

type Req = Request<()>;

/// Answers at once with an empty response, handing the request back through `slot` for reuse.
#[derive(Debug, Clone, Default)]
struct Echo {
    slot: Rc<RefCell<Option<Req>>>,
}

impl Echo {
    fn take(&self) -> Req {
        self.slot.borrow_mut().take().expect("the request is back in its slot")
    }
}

impl Service<Req> for Echo {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        *self.slot.borrow_mut() = Some(req);
        ready(Ok(Response::new(())))
    }
}

/// Polls a future that is ready at once.
#[inline]
fn now<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the benchmark's inner service is always ready"),
    }
}

/// 100k rules in 10.0.0.0/8: `allow 10.0.0.0/8`, then /24s and /32s, allowed or denied at random.
fn rules() -> IpRules {
    let mut rng = Rng::new(0x6970_6669);
    let mut seen = std::collections::HashSet::new();
    let mut b = IpRules::builder(Action::Deny);
    b.name("bench").allow("10.0.0.0/8");
    while b.len() < RULES {
        let addr = 0x0a00_0000 | (rng.next_u32() & 0x00ff_ffff);
        let range = if rng.next_u32().is_multiple_of(3) {
            IpRange::V4 { start: addr, end: addr }
        } else {
            IpRange::V4 { start: addr & !0xff, end: addr | 0xff }
        };
        if !seen.insert(range) {
            continue;
        }
        if rng.next_u32().is_multiple_of(2) {
            b.allow(range);
        } else {
            b.deny(range);
        }
    }
    b.build().expect("benchmark rules build")
}

/// Makes the reused request a new one from `ip`: its client, and no IP decision recorded yet (the filter
/// records why it let a request through; a request is decided once).
fn set_client(req: &mut Req, ip: IpAddr) {
    let decisions = Decisions::get_mut(req.extensions_mut());
    decisions.client = Some(ClientAddr { ip, learnt_via: LearntVia::Peer });
    decisions.ip.clear();
}

/// Runs the ipfilter group.
pub(crate) fn run() {
    let rules = rules();
    let mut rng = Rng::new(0x636c_6965);
    let mut clients = Vec::with_capacity(CLIENTS);
    while clients.len() < CLIENTS {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (rng.next_u32() & 0x00ff_ffff)));
        if rules.allows(ip) {
            clients.push(ip);
        }
    }
    let handle = IpRulesHandle::new(rules);
    let echo = Echo::default();
    let mut filter = IpFilter::new(echo.clone(), portcullis::ip::IpRule::new(handle));
    let mut cx = Context::from_waker(Waker::noop());
    let mut req = Request::new(());
    set_client(&mut req, clients[0]);
    *echo.slot.borrow_mut() = Some(req);

    let mut through_filter = |i: usize| {
        let mut req = echo.take();
        set_client(&mut req, clients[i % CLIENTS]);
        let _ = filter.poll_ready(&mut cx);
        let res = now(filter.call(black_box(req))).expect("infallible");
        assert!(
            matches!(black_box(res).into_body(), GateBody::Inner { .. }),
            "an allowed client was refused"
        );
    };
    // Warm up (the first arc-swap load on a thread registers it), then count allocations.
    for i in 0..10_000 {
        through_filter(i);
    }
    let ((), allocs) = count_allocs(|| {
        for i in 0..ITERS {
            through_filter(i);
        }
    });
    let allocs_per_request = allocs.div_ceil(ITERS as u64);

    let mut inner = Echo::default();
    let mut req = Request::new(());
    set_client(&mut req, clients[0]);
    *inner.slot.borrow_mut() = Some(req);
    let mut cx2 = Context::from_waker(Waker::noop());
    let mut direct = |i: usize| {
        let mut req = inner.take();
        set_client(&mut req, clients[i % CLIENTS]);
        let _ = inner.poll_ready(&mut cx2);
        let res = now(inner.call(black_box(req))).expect("infallible");
        black_box(res);
    };

    // Alternate the two loops batch by batch so drift hits both.
    let (mut filter_ns, mut base_ns) = (Vec::new(), Vec::new());
    for _ in 0..BATCHES {
        filter_ns.push(median_ns(1, ITERS, &mut through_filter));
        base_ns.push(median_ns(1, ITERS, &mut direct));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (f, b) = (median(&mut filter_ns), median(&mut base_ns));
    report("filter_allow_100k", f, "ns");
    report("filter_baseline", b, "ns");
    report("filter_overhead", f - b, "ns");
    report("allocs_allow_path", allocs_per_request as f64, "count");
}
