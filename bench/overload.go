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
//   - a full outage: every request answered 503;
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
// failures for a second.
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
	{"inmesh, adaptive limit, max_wait 25ms", meshLoad(withConcurrency("{adaptive: {}, max_wait: 25ms}"))},
	{"inmesh, adaptive limit, refuse at once", meshLoad(withConcurrency("{adaptive: {}}"))},
	{"inmesh, max 4, max_wait 25ms", meshLoad(withConcurrency("{max: 4, max_wait: 25ms}"))},
	{"inmesh, max 4, refuse at once", meshLoad(withConcurrency("{max: 4}"))},
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
	outage := &section{title: "Overload: every request answered 503, offered " + rate(offered),
		dur: e.cfg.outage, columns: []column{
			value("backend req/call", "req_per_call", "%.2f"),
			ratio("req x bare", "req_per_call"),
		}}
	limited := &section{title: fmt.Sprintf("Overload: capacity %s (%d × %v), offered %s", rate(capacity), slots, serviceTime, rate(offered)),
		dur: e.cfg.load, columns: []column{
			value("goodput/s", "goodput", "%.0f"),
			value("% of offered", "ok_pct", "%.1f"),
			value("% of capacity", "capacity_pct", "%.1f"),
			value("backend req/call", "req_per_call", "%.2f"),
			ratio("req x bare", "req_per_call"),
		}}
	for _, v := range []struct {
		s *section
		h func(w http.ResponseWriter, r *http.Request)
	}{
		{outage, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }},
		{limited, limitedHandler(slots, serviceTime)},
	} {
		ln, err := e.listen()
		if err != nil {
			return nil, err
		}
		var hits atomic.Int64
		e.serveHTTP(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			v.h(w, r)
		}), nil)
		for _, st := range loadStacks {
			v.s.add(st.name, func(d time.Duration) (metrics, error) {
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
	}
	return []*section{outage, limited}, nil
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
