package mesh

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/meshtest"
)

// waitForDeadline is a well-behaved handler: it stops when its context
// ends, and writes nothing.
func waitForDeadline(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }

// aheadOfCaller makes the destination's copy of the propagated deadline
// pass first, as it does under load: the header is shortened to 20ms
// before Handler reads it, while the caller's own deadline is far away.
func aheadOfCaller(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(HeaderTimeout) != "" {
			r.Header.Set(HeaderTimeout, "20")
		}
		h.ServeHTTP(w, r)
	})
}

// TestHandlerAnswersTimeoutNotEmptySuccess: when the propagated deadline
// passes before the application wrote anything, the caller gets a
// CallError of layer timeout, never an empty 200; over HTTP/1.1 and
// HTTP/2, whichever side's copy of the deadline passes first.
func TestHandlerAnswersTimeoutNotEmptySuccess(t *testing.T) {
	const calls = 100
	for _, tc := range []struct {
		name    string
		timeout string // the caller's route timeout
		ahead   bool   // the destination's deadline passes first, every time
	}{
		{"destination first", "30s", true},
		{"race", "50ms", false},
	} {
		for _, h2 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s h2=%v", tc.name, h2), func(t *testing.T) {
				billing := newSecureServer(t, "billing", meshtest.FleetPolicy, h2, waitForDeadline)
				if tc.ahead {
					billing.Config.Handler = aheadOfCaller(billing.Config.Handler)
				}
				pol := fmt.Sprintf(`
version: fleet-1
trust_domain: mesh.local
services:
  billing:
    endpoints: [{address: %s}]
    timeout: %s
  admin: {}
`, billing.Addr(), tc.timeout)
				client := newTestMesh(t, pol, WithService("admin"))
				outcomes := map[string]int{}
				for range calls {
					code, body, err := get(t, client, "http://billing/x")
					switch {
					case err == nil:
						outcomes[fmt.Sprintf("%d %q", code, body)]++
					default:
						ce := meshtest.ErrorAs[*CallError](t, err)
						outcomes["layer "+string(ce.Layer)]++
					}
				}
				if outcomes["layer timeout"] != calls {
					t.Fatalf("outcomes of %d calls past their deadline: %v; want layer timeout for all", calls, outcomes)
				}
				billing.checkProto(t, h2)
			})
		}
	}
}

// TestHandlerTimeoutNamesTheDeadline: the CallError of a timeout the
// destination reported says so, and which deadline it was.
func TestHandlerTimeoutNamesTheDeadline(t *testing.T) {
	billing := newSecureServer(t, "billing", meshtest.FleetPolicy, false, waitForDeadline)
	billing.Config.Handler = aheadOfCaller(billing.Config.Handler)
	client := newTestMesh(t, fmt.Sprintf(`
trust_domain: mesh.local
services:
  billing:
    endpoints: [{address: %s}]
    timeout: 30s
    retry: {attempts: 2, per_try_timeout: 10s, backoff: {initial: 1ms, max: 1ms}, retry_on: [per-try-timeout]}
  admin: {}
`, billing.Addr()), WithService("admin"))
	_, _, err := get(t, client, "http://billing/x")
	ce := meshtest.ErrorAs[*CallError](t, err)
	if ce.Layer != LayerTimeout || ce.Attempts != 2 || !ce.Timeout() ||
		!errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "per_try_timeout passed at the destination") {
		t.Fatalf("got %v (%+v)", err, ce)
	}
}

// A plaintext destination's 504 is returned as a response, still never as
// an empty success.
func TestHandlerTimeoutOverPlaintext(t *testing.T) {
	m := newTestMesh(t, "defaults: {tls: disable}\nservices:\n  tester: {}\n")
	srv := httptest.NewServer(aheadOfCaller(m.Handler(http.HandlerFunc(waitForDeadline))))
	t.Cleanup(srv.Close)
	client := newTestMesh(t, plainBilling(srv.Listener.Addr().String(), "    timeout: 30s\n"))
	code, _, err := get(t, client, "http://billing/x")
	if err != nil || code != http.StatusGatewayTimeout {
		t.Fatalf("%d %v, want the destination's 504", code, err)
	}
}

func TestParseTimeout(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want time.Duration // 0: no deadline
	}{
		{nil, 0},
		{[]string{""}, 0},
		{[]string{"0"}, 0},
		{[]string{"-5"}, 0},
		{[]string{"abc"}, 0},
		{[]string{"1.5"}, 0},
		{[]string{"9300000000000"}, 0},
		{[]string{"9223372036854775807"}, 0},
		{[]string{"86400001"}, 0},
		{[]string{"+5"}, 0},
		{[]string{" 5"}, 0},
		{[]string{"5 "}, 0},
		{[]string{"0x10"}, 0},
		{[]string{"5", "6"}, 0},
		{[]string{"1"}, time.Millisecond},
		{[]string{"1000"}, time.Second},
		{[]string{"00001000"}, time.Second},
		{[]string{"86400000"}, 24 * time.Hour},
	} {
		got, ok := parseTimeout(tc.in)
		if ok != (tc.want != 0) || got != tc.want {
			t.Errorf("parseTimeout(%q) = %v, %v; want %v", tc.in, got, ok, tc.want)
		}
	}
}

// TestHandlerIgnoresInvalidTimeout sends the header over a real
// connection: values that are no positive integer of at most a day leave
// the application without a deadline, instead of one already passed.
func TestHandlerIgnoresInvalidTimeout(t *testing.T) {
	m := newTestMesh(t, "defaults: {tls: disable}\nservices:\n  tester: {}\n")
	type seen struct {
		has     bool
		left    time.Duration
		expired bool
	}
	got := make(chan seen, 1)
	srv := httptest.NewServer(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dl, has := r.Context().Deadline()
		got <- seen{has: has, left: time.Until(dl), expired: r.Context().Err() != nil}
	})))
	t.Cleanup(srv.Close)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	for _, tc := range []struct {
		value string
		want  bool // a deadline of at most a second
	}{
		{"", false}, {"0", false}, {"-5", false}, {"abc", false}, {"1.5", false},
		{"9300000000000", false}, {"86400001", false}, {"+5", false},
		{"1000", true},
	} {
		req := meshtest.MustRequest(t, http.MethodGet, srv.URL)
		if tc.value != "" {
			req.Header.Set(HeaderTimeout, tc.value)
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		s := <-got
		if s.expired || s.has != tc.want || (s.has && (s.left <= 0 || s.left > time.Second)) {
			t.Errorf("%s: %q: deadline %v (%v left), expired %v; want a deadline: %v",
				HeaderTimeout, tc.value, s.has, s.left, s.expired, tc.want)
		}
	}
}
