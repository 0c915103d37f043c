package main

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Overload: what the client's retries do to a backend that cannot answer,
// under an open-loop load (each call starts at its time, whatever the
// earlier ones do, as independent users would):
//
//   - a full outage: every request answered 503, and then its recovery:
//     how long after the backend heals until calls succeed again;
//   - a capacity limit: slots requests at once, serviceTime each, 503 at
//     once when all slots are busy, offered 1.5x its capacity.

const (
	slots       = 4
	serviceTime = 10 * time.Millisecond
	capacity    = slots * float64(time.Second/serviceTime) // calls per second
	offered     = 1.5 * capacity
)

// overloadSettings are the retries of every retrying row: three tries,
// exponential backoff, within the whole call's timeout; inmesh adds its
// retry budget. withBreaker adds a breaker that opens after 5 consecutive
// failures for a second; withRateBreaker inmesh's failure-rate breaker,
// open for a second when half the attempts of the last second failed (20
// at least), closed again after 3 successful probes; withRateBreaker90 the
// same at 90%. The breaker counts attempts, retries included: a saturated
// backend's share of failed attempts is above its share of failed calls.
var (
	overloadSettings = settings{
		timeout:  2 * time.Second,
		attempts: 3,
		backoff:  [2]time.Duration{25 * time.Millisecond, 250 * time.Millisecond},
	}
	withBreaker = func(s settings) settings {
		s.breakerFailures, s.breakerOpen = 5, time.Second
		return s
	}(overloadSettings)
	withRateBreaker   = rateBreaker(0.5)
	withRateBreaker90 = rateBreaker(0.9)
)

// withConcurrency is overloadSettings with the concurrency block c.
func withConcurrency(c string) settings {
	s := overloadSettings
	s.concurrency = c
	return s
}

// A loadStack is a client under overload. build returns a new one, with
// fresh breaker and budget state, and the URL to call for a backend at
// addr; what it starts is closed through e.
type loadStack struct {
	name  string
	build func(e *env, addr string) (http.RoundTripper, string, error)
}

// loadStacks are the rows of both overload sections. A new protection is a
// new entry.
var loadStacks = []loadStack{
	{"bare http.Transport (one try)", func(e *env, addr string) (http.RoundTripper, string, error) {
		return e.loadTransport(), "http://" + addr + "/", nil
	}},
	{"naive retries (3 tries at once)", func(e *env, addr string) (http.RoundTripper, string, error) {
		return naiveRetry{e.loadTransport(), 3}, "http://" + addr + "/", nil
	}},
	{"failsafe-go (timeout, retry, breaker)", func(e *env, addr string) (http.RoundTripper, string, error) {
		return withBreaker.failsafeRT(e.loadTransport()), "http://" + addr + "/", nil
	}},
	{"inmesh, retry with budget", meshLoad(overloadSettings)},
	{"inmesh, retry with budget, breaker", meshLoad(withBreaker)},
	{"inmesh, retry with budget, rate breaker", meshLoad(withRateBreaker)},
	{"inmesh, retry with budget, rate breaker at 90%", meshLoad(withRateBreaker90)},
	{"inmesh, adaptive limit, max_wait 25ms", meshLoad(withConcurrency("{adaptive: {}, max_wait: 25ms}"))},
	{"inmesh, adaptive limit, refuse at once", meshLoad(withConcurrency("{adaptive: {}}"))},
	{"inmesh, max 4, max_wait 25ms", meshLoad(withConcurrency("{max: 4, max_wait: 25ms}"))},
	{"inmesh, max 4, refuse at once", meshLoad(withConcurrency("{max: 4}"))},
}

// rateBreaker is overloadSettings with a rate breaker that opens at rate.
func rateBreaker(rate float64) settings {
	s := overloadSettings
	s.breakerRate = breakerRate{rate: rate, window: time.Second, minCalls: 20, probes: 3}
	s.breakerOpen = time.Second
	return s
}

// meshLoad builds an inmesh client whose policy is s toward the backend.
func meshLoad(s settings) func(e *env, addr string) (http.RoundTripper, string, error) {
	return func(e *env, addr string) (http.RoundTripper, string, error) {
		m, err := e.newMesh("enrollment", chainPolicy("disable", s, addr, ""), telemetryOff())
		if err != nil {
			return nil, "", err
		}
		return m.RoundTripper(e.loadTransport()), "http://billing/", nil
	}
}

// loadTransport has room for the connections of an open-loop load.
func (e *env) loadTransport() *http.Transport {
	t := e.newTransport()
	t.MaxIdleConnsPerHost = 256
	return t
}

func overloadSections(e *env) ([]*section, error) {
	outage := &section{title: fmt.Sprintf("Overload: every request answered 503, offered %s; then the backend heals", rate(offered)),
		dur: e.cfg.outage, columns: []column{
			value("backend req/call", "req_per_call", "%.2f"),
			ratio("req x bare", "req_per_call"),
			recoveryColumn(e.cfg.recovery),
		}}
	limited := &section{title: fmt.Sprintf("Overload: capacity %s (%d × %v), offered %s", rate(capacity), slots, serviceTime, rate(offered)),
		dur: e.cfg.load, columns: []column{
			value("goodput/s", "goodput", "%.0f"),
			value("% of offered", "ok_pct", "%.1f"),
			value("% of capacity", "capacity_pct", "%.1f"),
			value("backend req/call", "req_per_call", "%.2f"),
			ratio("req x bare", "req_per_call"),
		}}
	if err := e.outageRows(outage); err != nil {
		return nil, err
	}
	ln, err := e.listen()
	if err != nil {
		return nil, err
	}
	var hits atomic.Int64
	h := limitedHandler(slots, serviceTime)
	e.serveHTTP(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		h(w, r)
	}), nil)
	for _, st := range loadStacks {
		limited.add(st.name, func(d time.Duration) (metrics, error) {
			round := &env{cfg: e.cfg, ca: e.ca}
			defer round.run()
			rt, url, err := st.build(round, ln.Addr().String())
			if err != nil {
				return nil, err
			}
			before := hits.Load()
			calls, ok := offer(rt, url, offered, d)
			reqs := float64(hits.Load() - before)
			goodput := float64(ok) / d.Seconds()
			return metrics{
				"req_per_call": reqs / float64(calls),
				"goodput":      goodput,
				"ok_pct":       100 * float64(ok) / float64(calls),
				"capacity_pct": 100 * goodput / capacity,
			}, nil
		})
	}
	return []*section{outage, limited}, nil
}

// outageRows adds the rows of the outage section: each round offers the
// load to a backend that answers 503 for d, then heals and answers 200 for
// e.cfg.recovery more. The requests per call are those of the outage
// (the requests the failing backend got over the calls started while it
// failed); the recovery is how long after the backend healed calls
// started failing no more.
func (e *env) outageRows(s *section) error {
	ln, err := e.listen()
	if err != nil {
		return err
	}
	var (
		failing atomic.Bool
		hits    atomic.Int64 // while failing
	)
	e.serveHTTP(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if failing.Load() {
			hits.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}), nil)
	for _, st := range loadStacks {
		s.add(st.name, func(d time.Duration) (metrics, error) {
			round := &env{cfg: e.cfg, ca: e.ca}
			defer round.run()
			rt, url, err := st.build(round, ln.Addr().String())
			if err != nil {
				return nil, err
			}
			failing.Store(true)
			before := hits.Load()
			calls, recovery := offerOutage(rt, url, offered, d, e.cfg.recovery, func() { failing.Store(false) })
			return metrics{
				"req_per_call": float64(hits.Load()-before) / float64(calls),
				"recovery":     recovery.Seconds(),
			}, nil
		})
	}
	return nil
}

// recoveryColumn shows the recovery in seconds, or that the calls still
// failed after the whole recovery phase.
func recoveryColumn(phase time.Duration) column {
	return column{"recovery s", func(m, _ metrics) string {
		if m["recovery"] >= phase.Seconds() {
			return fmt.Sprintf(">%.1f", phase.Seconds())
		}
		return fmt.Sprintf("%.2f", m["recovery"])
	}}
}

// offerOutage offers the load of offer for outage, calls heal, and offers
// it for after more. It returns the calls started before heal, and the
// recovery: from heal to the start of the first call after which no call
// started failed (0 when none did; after when the last one failed).
func offerOutage(rt http.RoundTripper, url string, perSecond float64, outage, after time.Duration, heal func()) (calls int64, recovery time.Duration) {
	n := int64(perSecond * (outage + after).Seconds())
	calls = int64(perSecond * outage.Seconds())
	interval := time.Duration(float64(time.Second) / perSecond)
	failed := make([]atomic.Bool, n)
	starts := make([]time.Duration, n) // from the start of the round
	var healed time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		if i == calls {
			heal()
			healed = time.Since(start)
		}
		starts[i] = time.Since(start)
		wg.Go(func() {
			req, err := http.NewRequest(http.MethodGet, url, nil)
			if err == nil {
				var resp *http.Response
				if resp, err = rt.RoundTrip(req); err == nil {
					drain(resp)
					if resp.StatusCode == http.StatusOK {
						return
					}
				}
			}
			failed[i].Store(true)
		})
	}
	wg.Wait()
	for i := n - 1; i >= calls; i-- {
		if failed[i].Load() {
			if i == n-1 {
				return calls, after
			}
			return calls, max(starts[i+1]-healed, 0)
		}
	}
	return calls, 0
}

// limitedHandler serves n requests at once, each taking service; one more
// is answered 503 at once.
func limitedHandler(n int, service time.Duration) func(http.ResponseWriter, *http.Request) {
	sem := make(chan struct{}, n)
	return func(w http.ResponseWriter, _ *http.Request) {
		select {
		case sem <- struct{}{}:
			time.Sleep(service)
			<-sem
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}
}

// offer calls GET url through rt perSecond times a second for d, open loop:
// every call in its own goroutine at its time. It returns the calls made
// and those answered 200, once every call has ended.
func offer(rt http.RoundTripper, url string, perSecond float64, d time.Duration) (calls, ok int64) {
	n := int64(perSecond * d.Seconds())
	interval := time.Duration(float64(time.Second) / perSecond)
	var good atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		wg.Go(func() {
			req, err := http.NewRequest(http.MethodGet, url, nil)
			if err != nil {
				return
			}
			resp, err := rt.RoundTrip(req)
			if err != nil {
				return
			}
			drain(resp)
			if resp.StatusCode == http.StatusOK {
				good.Add(1)
			}
		})
	}
	wg.Wait()
	return n, good.Load()
}

// rate formats calls per second.
func rate(perSecond float64) string { return fmt.Sprintf("%.0f calls/s", perSecond) }
