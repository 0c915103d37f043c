package main

import (
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/inmesh/inmesh/mesh"
)

// Fault injection: the share of calls the fault block delays and aborts,
// over faultCalls calls a round, against its percent (the goal: within 3
// points). The calls go one after the other to a backend that answers at
// once; a call is counted as delayed when it took at least the delay.

const (
	faultCalls = 2000
	faultDelay = 5 * time.Millisecond
)

// faultRows are the rows: the percents of the fault block of each.
var faultRows = []struct {
	name         string
	delay, abort float64
}{
	{"inmesh, abort 5%", 0, 5},
	{"inmesh, abort 50%", 0, 50},
	{"inmesh, delay 10% (5ms)", 10, 0},
	{"inmesh, delay 10%, abort 20%", 10, 20},
}

func faultSections(e *env) ([]*section, error) {
	s := &section{title: fmt.Sprintf("Fault injection: %d calls a round", faultCalls), columns: []column{
		value("% delayed", "delayed_pct", "%.2f"),
		value("% aborted", "aborted_pct", "%.2f"),
		value("backend req/call", "req_per_call", "%.3f"),
	}}
	ln, err := e.listen()
	if err != nil {
		return nil, err
	}
	var hits atomic.Int64
	e.serveHTTP(ln, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }), nil)
	for _, fr := range faultRows {
		doc := fmt.Sprintf(`services:
  billing:
    tls: disable
    endpoints: [{address: %s}]
    fault:
      delay: {percent: %v, duration: %v}
      abort: {percent: %v}
`, ln.Addr(), fr.delay, faultDelay, fr.abort)
		m, err := e.newMesh("enrollment", doc, telemetryOff())
		if err != nil {
			return nil, err
		}
		rt := m.RoundTripper(e.newTransport())
		s.add(fr.name, func(time.Duration) (metrics, error) {
			before := hits.Load()
			delayed, aborted := 0, 0
			for range faultCalls {
				req, err := http.NewRequest(http.MethodGet, "http://billing/", nil)
				if err != nil {
					return nil, err
				}
				start := time.Now()
				resp, err := rt.RoundTrip(req)
				if time.Since(start) >= faultDelay {
					delayed++
				}
				var ce *mesh.CallError
				switch {
				case errors.As(err, &ce) && ce.Layer == mesh.LayerFault:
					aborted++
				case err != nil:
					return nil, err
				default:
					drain(resp)
				}
			}
			return metrics{
				"delayed_pct":  100 * float64(delayed) / faultCalls,
				"aborted_pct":  100 * float64(aborted) / faultCalls,
				"req_per_call": float64(hits.Load()-before) / faultCalls,
			}, nil
		})
	}
	return []*section{s}, nil
}
