package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// HTTP on loopback: each client stack against real servers on 127.0.0.1,
// sequential and 8 callers in parallel.

var httpColumns = []column{
	value("CPU µs/call", "cpu_us", "%.1f"),
	value("wall µs/call", "wall_us", "%.1f"),
	value("allocs/call", "allocs", "%.0f"),
	ratio("CPU x bare", "cpu_us"),
	ratio("wall x bare", "wall_us"),
	added("allocs added", "allocs", "%.0f"),
}

// An httpStack is a row of the HTTP sections.
type httpStack struct {
	name  string
	vs    string // the row its ratios are to; "": the bare row
	rt    http.RoundTripper
	url   string
	extra func() time.Duration // CPU of other processes on the path
	skip  string               // why it is not measured
}

func httpSections(e *env) ([]*section, error) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	// Plain servers: v1 and v2 of the split; the bare stacks call v1.
	var plain [2]string
	for i := range plain {
		ln, err := e.listen()
		if err != nil {
			return nil, err
		}
		e.serveHTTP(ln, ok, nil)
		plain[i] = ln.Addr().String()
	}
	direct := "http://" + plain[0] + "/"
	meshed := "http://billing/"

	meshRT := func(tel telemetry) (http.RoundTripper, error) {
		m, err := e.newMesh("enrollment", chainPolicy("disable", chainSettings, plain[0], plain[1]), tel)
		if err != nil {
			return nil, err
		}
		return m.RoundTripper(e.newTransport()), nil
	}
	meshOff, err := meshRT(telemetryOff())
	if err != nil {
		return nil, err
	}
	meshSDK, err := meshRT(e.otelSDK())
	if err != nil {
		return nil, err
	}

	bareTLSURL, bareTLSRT, err := e.bareMTLS(ok)
	if err != nil {
		return nil, err
	}
	meshTLSRT, err := e.meshMTLS(ok)
	if err != nil {
		return nil, err
	}

	stacks := []httpStack{
		{name: "bare http.Transport", rt: e.newTransport(), url: direct},
		{name: "inmesh full chain, telemetry off", rt: meshOff, url: meshed},
		{name: "inmesh full chain, OTel SDK", rt: meshSDK, url: meshed},
		{name: "failsafe-go (timeout, retry, breaker)", rt: chainSettings.failsafeRT(e.newTransport()), url: direct},
		{name: "otelhttp, OTel SDK", rt: otelRT(e.newTransport(), e.otelSDK()), url: direct},
		{name: "failsafe-go + otelhttp, OTel SDK", rt: otelRT(chainSettings.failsafeRT(e.newTransport()), e.otelSDK()), url: direct},
		{name: "bare mutual TLS 1.3", rt: bareTLSRT, url: bareTLSURL},
		{name: "inmesh mTLS, meshed server, telemetry off", vs: "bare mutual TLS 1.3", rt: meshTLSRT, url: meshed},
	}
	if hop1, hop2, cpu, err := e.startHAProxies(plain[0]); err != nil {
		stacks = append(stacks,
			httpStack{name: "HAProxy, one hop", skip: err.Error()},
			httpStack{name: "HAProxy, two hops", skip: err.Error()})
	} else {
		stacks = append(stacks,
			httpStack{name: "HAProxy, one hop", rt: e.newTransport(), url: "http://" + hop1 + "/", extra: cpu},
			httpStack{name: "HAProxy, two hops", rt: e.newTransport(), url: "http://" + hop2 + "/", extra: cpu})
	}
	for _, st := range stacks {
		if st.skip != "" {
			continue
		}
		if err := wantHTTP1(st.rt, st.url); err != nil {
			return nil, fmt.Errorf("%s: %w", st.name, err)
		}
	}

	var out []*section
	for _, v := range []struct {
		title string
		par   int
	}{{"HTTP on loopback, sequential", 1}, {"HTTP on loopback, 8 callers in parallel", 8}} {
		s := &section{title: v.title, columns: httpColumns, dur: e.cfg.slice, warm: e.cfg.warm}
		for _, st := range stacks {
			if st.skip != "" {
				s.skip(st.name, st.skip)
				continue
			}
			op := get(st.rt, st.url)
			r := s.add(st.name, func(d time.Duration) (metrics, error) { return perCall(d, v.par, op, st.extra) })
			for _, ref := range s.rows {
				if st.vs != "" && ref.name == st.vs {
					r.ref = ref
				}
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// bareMTLS starts a plain HTTPS server that requires a client certificate
// of the dev CA, and returns its URL and a transport that presents one.
func (e *env) bareMTLS(h http.Handler) (string, http.RoundTripper, error) {
	srvTLS, err := e.bareTLS("billing")
	if err != nil {
		return "", nil, err
	}
	cliTLS, err := e.bareTLS("enrollment")
	if err != nil {
		return "", nil, err
	}
	ln, err := e.listen()
	if err != nil {
		return "", nil, err
	}
	e.serveHTTP(ln, h, srvTLS.server())
	tr := e.newTransport()
	tr.TLSClientConfig = cliTLS.client("billing")
	return "https://" + ln.Addr().String() + "/", tr, nil
}

// meshMTLS starts two HTTPS servers behind billing's mesh (Handler and
// ServerTLSConfig), v1 and v2 of the split, and returns enrollment's mesh
// transport toward them, with telemetry off on both sides.
func (e *env) meshMTLS(h http.Handler) (http.RoundTripper, error) {
	var lns [2]net.Listener
	for i := range lns {
		ln, err := e.listen()
		if err != nil {
			return nil, err
		}
		lns[i] = ln
	}
	doc := chainPolicy("strict", chainSettings, lns[0].Addr().String(), lns[1].Addr().String())
	srv, err := e.newMesh("billing", doc, telemetryOff())
	if err != nil {
		return nil, err
	}
	for _, ln := range lns {
		e.serveHTTP(ln, srv.Handler(h), srv.ServerTLSConfig())
	}
	cli, err := e.newMesh("enrollment", doc, telemetryOff())
	if err != nil {
		return nil, err
	}
	return cli.RoundTripper(e.newTransport()), nil
}
