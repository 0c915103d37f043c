package main

import (
	"net/http"
	"time"
)

// No I/O: what each stack adds to a call over a RoundTripper that answers
// at once, sequential: the library's own cost, without the network's.

var noIOColumns = []column{
	value("wall ns/call", "wall_ns", "%.0f"),
	value("CPU ns/call", "cpu_ns", "%.0f"),
	value("allocs/call", "allocs", "%.0f"),
	added("wall ns added", "wall_ns", "%.0f"),
	added("CPU ns added", "cpu_ns", "%.0f"),
	added("allocs added", "allocs", "%.0f"),
}

// instant answers every request at once with an empty 200.
type instant struct{}

func (instant) RoundTrip(*http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Header: http.Header{}}, nil
}

func noIOSections(e *env) ([]*section, error) {
	// The endpoints are never dialed: instant answers for them.
	doc := chainPolicy("disable", chainSettings, "127.0.0.1:9", "127.0.0.1:10")
	meshRT := func(tel telemetry) (http.RoundTripper, error) {
		m, err := e.newMesh("enrollment", doc, tel)
		if err != nil {
			return nil, err
		}
		return m.RoundTripper(instant{}), nil
	}
	meshOff, err := meshRT(telemetryOff())
	if err != nil {
		return nil, err
	}
	meshSDK, err := meshRT(e.otelSDK())
	if err != nil {
		return nil, err
	}
	floor, err := newSDKFloor(instant{}, e.otelSDK(), false)
	if err != nil {
		return nil, err
	}
	floorInject, err := newSDKFloor(instant{}, e.otelSDK(), true)
	if err != nil {
		return nil, err
	}
	const direct, meshed = "http://billing-direct/", "http://billing/"
	stacks := []struct {
		name string
		rt   http.RoundTripper
		url  string
	}{
		{"bare (the instant RoundTripper)", instant{}, direct},
		{"inmesh full chain, telemetry off", meshOff, meshed},
		{"inmesh full chain, OTel SDK", meshSDK, meshed},
		{"OTel SDK alone: what inmesh records, no mesh", floor, direct},
		{"OTel SDK alone, with W3C inject", floorInject, direct},
		{"failsafe-go (timeout, retry, breaker)", chainSettings.failsafeRT(instant{}), direct},
		{"otelhttp, OTel SDK", otelRT(instant{}, e.otelSDK()), direct},
		{"failsafe-go + otelhttp, OTel SDK", otelRT(chainSettings.failsafeRT(instant{}), e.otelSDK()), direct},
	}
	s := &section{title: "No I/O, sequential: added over a RoundTripper that answers at once",
		columns: noIOColumns, dur: e.cfg.slice, warm: e.cfg.warm}
	for _, st := range stacks {
		op := get(st.rt, st.url)
		s.add(st.name, func(d time.Duration) (metrics, error) {
			m, err := perCall(d, 1, op, nil)
			if err == nil {
				m["wall_ns"], m["cpu_ns"] = m["wall_us"]*1e3, m["cpu_us"]*1e3
			}
			return m, err
		})
	}
	return []*section{s}, nil
}
