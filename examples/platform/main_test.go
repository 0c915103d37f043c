package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/meshgrpc"
	"github.com/inmesh/inmesh/policy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

// TestDemo plays the scenario with short phases and checks the story it
// tells, by counts: the canary split before and after the policy file's
// edit, the versions the admin handler reports, the outage's breaker
// opening and closing, the unauthorized caller denied, retries absorbing
// the flaky catalog, the breaker failing progress fast, and the overload.
func TestDemo(t *testing.T) {
	defer http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	var logs, started meshtest.LockedBuffer
	res, err := simulate(context.Background(), options{policy: embeddedPolicy, phase: time.Second, workers: 4, logs: &logs, out: &started})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	tell(&out, res)
	t.Logf("mesh logs:\n%s", logs.String())
	t.Logf("\n%s", out.String())

	names := []string{"steady traffic", "canary shift to 50%", "dependency outage", "unauthorized caller", "overload"}
	if len(res.phases) != len(names) {
		t.Fatalf("%d phases, want %d", len(res.phases), len(names))
	}
	for i, p := range res.phases {
		if p.name != names[i] {
			t.Errorf("phase %d is %q, want %q", i+1, p.name, names[i])
		}
	}
	steady, canary, outage, intruder := res.phases[0], res.phases[1], res.phases[2], res.phases[3]

	// The split per phase, from the metrics (inmesh.subset) and from what
	// the callers got back (the version in billing's answer).
	for _, c := range []struct {
		p      *phase
		lo, hi float64
	}{
		{steady, 0.03, 0.20},
		{canary, 0.35, 0.65},
	} {
		split := c.p.metrics.by(metricHTTPClient, "inmesh.subset", match{attrService: "billing"})
		if n := split["v1"] + split["v2"]; n < 100 {
			t.Errorf("%s: only %.0f billing calls in the metrics", c.p.name, n)
		} else if share := split["v2"] / n; share < c.lo || share > c.hi {
			t.Errorf("%s: v2 took %.3f of billing calls in the metrics, want %.2f..%.2f", c.p.name, share, c.lo, c.hi)
		}
		v := c.p.stats.versions
		if share := float64(v["v2"]) / float64(v["v1"]+v["v2"]); share < c.lo || share > c.hi {
			t.Errorf("%s: v2 answered %.3f of billing calls, want %.2f..%.2f", c.p.name, share, c.lo, c.hi)
		}
	}
	if s := steady.stats; math.Abs(float64(s.versions["v2"])/float64(s.calls["billing"])-0.10) > 0.05 {
		t.Errorf("canary share %d of %d, want about 0.10", s.versions["v2"], s.calls["billing"])
	}

	// The policy versions, from the admin handler's /config over HTTP.
	if !res.policyEdited {
		t.Error("the canary shift was not applied from the edited file")
	}
	if steady.config.Version != "2026-11-26.1" || canary.config.Version != "2026-11-26.2" {
		t.Errorf("versions per /config: %q then %q, want 2026-11-26.1 then 2026-11-26.2", steady.config.Version, canary.config.Version)
	}
	if canary.config.UpdatesApplied <= steady.config.UpdatesApplied || canary.config.UpdatesRejected != 0 {
		t.Errorf("updates applied %d then %d (%d rejected): the edit was not counted",
			steady.config.UpdatesApplied, canary.config.UpdatesApplied, canary.config.UpdatesRejected)
	}
	if !strings.HasPrefix(canary.config.Source, "file:") {
		t.Errorf("policy source %q, want the file", canary.config.Source)
	}
	if !strings.Contains(started.String(), res.adminURL) || !strings.HasSuffix(res.adminURL, "/debug/inmesh/") {
		t.Errorf("admin URL %q, printed: %q", res.adminURL, started.String())
	}

	// Explain, through the admin handler: the new split, the open breaker,
	// and the authorization the intruder meets.
	explained := func(p *phase, n int) []*mesh.Explanation {
		if len(p.explained) != n {
			t.Fatalf("%s: %d explanations, want %d; notes %q", p.name, len(p.explained), n, p.notes)
		}
		return p.explained
	}
	if ex := explained(canary, 1)[0]; ex.PolicyVersion != "2026-11-26.2" || len(ex.Split) != 2 || ex.Split[0].Weight != 50 || ex.Split[1].Weight != 50 {
		t.Errorf("/explain after the shift: version %s, split %+v; want 2026-11-26.2 and 50/50", ex.PolicyVersion, ex.Split)
	}
	if ex := explained(outage, 1)[0]; ex.Breaker != "open" && ex.Breaker != "half-open" {
		t.Errorf("/explain during the outage: breaker %q, want open (or half-open, probing)", ex.Breaker)
	}
	for _, ex := range explained(intruder, 2) {
		if ex.Caller != "progress" || !strings.HasPrefix(ex.Authorization, "denied") {
			t.Errorf("/explain as progress: caller %q, authorization %q; want denied", ex.Caller, ex.Authorization)
		}
	}

	// The outage: notifications' breaker opened and closed again, by the
	// transitions counter and the mesh's log.
	tr := func(to string) float64 {
		return outage.metrics.value(metricTransitions, match{attrService: "notifications", "to": to})
	}
	if tr("open") < 1 || tr("half-open") < 1 || tr("closed") != 1 {
		t.Errorf("notifications' breaker: %.0f opened, %.0f half-open, %.0f closed; want it opened, probed, closed once",
			tr("open"), tr("half-open"), tr("closed"))
	}
	if outage.stats.layers["notifications"]["breaker"] == 0 {
		t.Error("no notifications call failed fast at the open breaker")
	}
	for _, p := range []*phase{steady, canary, intruder} {
		if n := p.metrics.value(metricTransitions, match{attrService: "notifications"}); n != 0 {
			t.Errorf("%s: %0.f transitions of notifications' breaker, want none", p.name, n)
		}
	}
	for _, line := range []string{"[enrollment] WARN circuit breaker changed state service=notifications", "from=half-open to=closed",
		"[enrollment] INFO policy applied source=file:"} {
		if !strings.Contains(logs.String(), line) {
			t.Errorf("the mesh logs lack %q", line)
		}
	}

	// The unauthorized caller, refused over HTTP and gRPC, and counted by
	// the destinations' meshes.
	var ce *mesh.CallError
	if !errors.As(res.denied.err, &ce) || ce.Layer != mesh.LayerAuthz {
		t.Errorf("progress -> billing: %v, want a CallError of layer authz", res.denied.err)
	}
	if ce := meshgrpc.FromStatus(res.rpcDenied); ce == nil || ce.Layer != mesh.LayerAuthz || grpcstatus.Code(res.rpcDenied) != codes.PermissionDenied {
		t.Errorf("progress -> grades: %v, want PermissionDenied of layer authz", res.rpcDenied)
	}
	for _, svc := range []string{"billing", "grades"} {
		if n := intruder.fleet.value(metricAuthz, match{"inmesh.service": svc, "inmesh.authz.decision": "deny"}); n < 3 {
			t.Errorf("%s denied %.0f calls in the unauthorized caller's phase, want 3", svc, n)
		}
	}

	// What the whole run saw.
	s := res.stats
	if billing := s.calls["billing"]; billing < 200 {
		t.Fatalf("only %d billing calls", billing)
	}
	// Four attempts against a 25% failure rate leave 0.4% of calls failed.
	if ok := float64(s.ok["catalog"]) / float64(s.calls["catalog"]); ok < 0.98 {
		t.Errorf("catalog: %d of %d calls succeeded; retries should absorb the 503s", s.ok["catalog"], s.calls["catalog"])
	}
	if res.hits["catalog"] <= int64(s.calls["catalog"]) {
		t.Errorf("catalog saw %d requests for %d calls: no retry happened", res.hits["catalog"], s.calls["catalog"])
	}
	calls := float64(steady.metrics.count(metricHTTPClient, match{attrService: "catalog"}))
	if a := steady.metrics.value(metricAttempts, match{attrService: "catalog"}); calls == 0 || a/calls < 1.05 {
		t.Errorf("catalog: %.0f attempts for %.0f calls in the metrics, want retries", a, calls)
	}
	if p50, ok := steady.metrics.quantile(metricHTTPClient, 0.5, match{attrService: "billing"}); !ok || p50 <= 0 {
		t.Errorf("billing p50 %v (%v)", p50, ok)
	}
	if s.layers["progress"]["breaker"] == 0 || res.hits["progress"] > 10 {
		t.Errorf("progress: %d breaker failures, %d requests reached it; the breaker should open after 5",
			s.layers["progress"]["breaker"], res.hits["progress"])
	}
	// gRPC, from the same policy: every health check served through the
	// mesh, the intruder denied by grades' mesh, and grades' own NotFound
	// passed on untouched.
	if g := s.calls["grades"]; g < 50 || s.ok["grades"] != g || res.hits["grades"] != int64(g) {
		t.Errorf("grades: %d of %d gRPC calls SERVING, %d reached the server", s.ok["grades"], g, res.hits["grades"])
	}
	if grpcstatus.Code(res.rpcUnknown) != codes.NotFound || meshgrpc.FromStatus(res.rpcUnknown) != nil {
		t.Errorf("unknown service: %v, want the application's NotFound", res.rpcUnknown)
	}
	if res.identity != "spiffe://mesh.local/svc/enrollment" {
		t.Errorf("enrollment's identity %q", res.identity)
	}
	// The overload phase: the adaptive limit keeps the saturated
	// recommendations at its capacity, shedding the excess in the caller
	// rather than sending it to be refused. Counts, not rates: how much
	// gets through depends on the machine.
	o := res.overload
	if o.shed == 0 || o.ok == 0 || o.rejected*5 > o.ok || o.other != 0 {
		t.Errorf("overload: %d answered, %d shed, %d answered 503, %d other; want sheds, and 503s under a fifth of the answers", o.ok, o.shed, o.rejected, o.other)
	}
	if o.limit < 1 || o.limit > 2*recommendationCapacity {
		t.Errorf("overload: the limit learned is %d, want 1..%d for a backend of %d slots", o.limit, 2*recommendationCapacity, recommendationCapacity)
	}
	for _, want := range []string{"failures by layer", "billing split: v1", "p99", "policy versions applied: 2026-11-26.1 -> 2026-11-26.2",
		"notifications closed->open", "authorization (the destinations' meshes): billing denied 3, grades denied 3"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

// TestShiftCanary: the edit sets every v1/v2 split of billing and counts
// the version up, and the result is a valid document.
func TestShiftCanary(t *testing.T) {
	tests := []struct {
		name, doc, wantErr string
		share              int
		wantVersion        string
	}{
		{name: "embedded", doc: string(embeddedPolicy), share: 50, wantVersion: "2026-11-26.2"},
		{name: "to 100", doc: string(embeddedPolicy), share: 100, wantVersion: "2026-11-26.2"},
		{name: "no billing", doc: "version: a\nservices:\n  x:\n    endpoints: [{address: 127.0.0.1:1}]\n", share: 50, wantErr: "no routes"},
		{name: "no v1/v2 split", doc: "version: a.7\nservices:\n  billing:\n    endpoints: [{address: 127.0.0.1:1}]\n    routes: [{name: r}]\n", share: 50, wantErr: "no v1/v2 split"},
		{name: "no version", doc: "services: {}\n", share: 50, wantErr: "no version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, version, err := shiftCanary([]byte(tt.doc), tt.share)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "platform: ") {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			doc, err := policy.Parse(out)
			if err != nil {
				t.Fatalf("the edited document does not parse: %v\n%s", err, out)
			}
			if version != tt.wantVersion || doc.Version != version {
				t.Errorf("version %q (document %q), want %q", version, doc.Version, tt.wantVersion)
			}
			shifted := 0
			for _, r := range doc.Services["billing"].Routes {
				w := map[string]int{}
				for _, s := range r.Split {
					w[s.Subset] = s.Weight
				}
				if len(r.Split) == 2 {
					shifted++
					if w["v1"] != 100-tt.share || w["v2"] != tt.share {
						t.Errorf("route %s: split %v, want v1 %d v2 %d", r.Name, w, 100-tt.share, tt.share)
					}
				}
			}
			if shifted != 2 {
				t.Errorf("%d routes shifted, want 2", shifted)
			}
			if !bytes.Contains(out, []byte("# flaky")) {
				t.Error("the edit lost the document's comments")
			}
		})
	}
}

func TestNextVersion(t *testing.T) {
	for in, want := range map[string]string{"2026-11-26.1": "2026-11-26.2", "v.9": "v.10", "abc": "abc.2", "1.x": "1.x.2"} {
		if got := nextVersion(in); got != want {
			t.Errorf("nextVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestQuantile: the estimate interpolates within the bucket the rank
// falls in, over every series that matches.
func TestQuantile(t *testing.T) {
	bounds := []float64{0.001, 0.01, 0.1}
	s := snapshot{
		"a": {name: "h", count: 10, bounds: bounds, buckets: []uint64{0, 10, 0, 0}},
		"b": {name: "h", count: 10, bounds: bounds, buckets: []uint64{0, 0, 10, 0}},
	}
	tests := []struct {
		q    float64
		want float64
	}{
		{0.25, 0.0055}, // half way through (0.001, 0.01]
		{0.5, 0.01},
		{0.75, 0.055},
		{1, 0.1},
	}
	for _, tt := range tests {
		got, ok := s.quantile("h", tt.q, nil)
		if !ok || math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("q%.2f = %v (%v), want %v", tt.q, got, ok, tt.want)
		}
	}
	if _, ok := s.quantile("other", 0.5, nil); ok {
		t.Error("a quantile of no measurement")
	}
}

// TestLogSink: warnings go through with the workload as prefix and without
// the keys the prefix says; the policy updates at Info too, but for a fixed
// policy's; repeats are counted, not written.
func TestLogSink(t *testing.T) {
	type rec struct {
		workload string
		level    slog.Level
		msg      string
		args     []any
	}
	breaker := func(to string) rec {
		return rec{"enrollment", slog.LevelWarn, "circuit breaker changed state", []any{"service", "notifications", "from", "closed", "to", to}}
	}
	tests := []struct {
		name           string
		records        []rec
		want, wantNot  []string
		lines, dropped int
	}{
		{
			name:    "a warning, prefixed",
			records: []rec{breaker("open")},
			want:    []string{"[enrollment] WARN circuit breaker changed state service=notifications from=closed to=open\n"},
			wantNot: []string{"component=", "workload="},
			lines:   1,
		},
		{
			name:    "info dropped, but a file's policy update",
			records: []rec{{"billing", slog.LevelInfo, "registered", nil}, {"billing", slog.LevelInfo, "policy applied", []any{"source", "inline", "version", "1"}}, {"enrollment", slog.LevelInfo, "policy applied", []any{"source", "file:/x", "version", "2"}}},
			want:    []string{"[enrollment] INFO policy applied source=file:/x version=2\n"},
			lines:   1,
		},
		{
			name:    "a destination's line three times at most, per transition",
			records: []rec{breaker("open"), breaker("open"), breaker("open"), breaker("open"), breaker("open"), breaker("closed")},
			want:    []string{"to=closed", "2 repeated mesh log lines left out"},
			lines:   5, dropped: 2,
		},
		{
			name:    "another line once, whatever the workload",
			records: []rec{{"billing", slog.LevelWarn, "dev CA", nil}, {"catalog", slog.LevelWarn, "dev CA", nil}, {"grades", slog.LevelError, "dev CA", nil}},
			want:    []string{"[billing] WARN dev CA\n"},
			wantNot: []string{"[catalog]"},
			lines:   2, dropped: 2,
		},
		{
			name:    "values quoted when needed",
			records: []rec{{"billing", slog.LevelWarn, "x", []any{"err", `a b="c"`}}},
			want:    []string{`err="a b=\"c\""`},
			lines:   1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			sink := newLogSink(&b)
			for _, r := range tt.records {
				sink.logger().With("component", "inmesh", "workload", r.workload).Log(context.Background(), r.level, r.msg, r.args...)
			}
			sink.done()
			got := b.String()
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("lacks %q:\n%s", w, got)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(got, w) {
					t.Errorf("has %q:\n%s", w, got)
				}
			}
			if n := strings.Count(got, "\n"); n != tt.lines || sink.suppressed != tt.dropped {
				t.Errorf("%d lines, %d left out; want %d and %d:\n%s", n, sink.suppressed, tt.lines, tt.dropped, got)
			}
		})
	}
}

// urlWriter hands the admin URL the demo prints, once, to a channel.
type urlWriter struct {
	once sync.Once
	url  chan string
}

func (w *urlWriter) Write(p []byte) (int, error) {
	if _, rest, ok := strings.Cut(string(p), "admin page of enrollment's mesh: "); ok {
		if url, _, ok := strings.Cut(rest, " "); ok {
			w.once.Do(func() { w.url <- url })
		}
	}
	return len(p), nil
}

// TestDemoAdminPageInBrowser: while the demo runs, a real headless
// browser loads its admin page and finds the policy version in force and
// the breakers; the page's /metrics answers in Prometheus text with the
// mesh's instruments.
func TestDemoAdminPageInBrowser(t *testing.T) {
	bin := meshtest.Chromium(t)
	defer http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	w := &urlWriter{url: make(chan string, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		// Phases long enough for a browser to start while the demo runs.
		_, err := simulate(ctx, options{policy: embeddedPolicy, phase: 3 * time.Second, workers: 2, out: w})
		done <- err
	}()
	var url string
	select {
	case url = <-w.url:
	case err := <-done:
		t.Fatalf("the demo ended before serving its admin page: %v", err)
	}
	dom := meshtest.DumpDOM(t, bin, url)
	for _, want := range []string{"2026-11-26.", "progress", "notifications", "closed"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the admin page lacks %q", want)
		}
	}
	if !strings.Contains(strings.ToLower(dom), "breaker") {
		t.Errorf("the admin page shows no breakers:\n%.2000s", dom)
	}
	resp, err := http.Get(url + "metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || !strings.Contains(string(body), "inmesh_") {
		t.Errorf("/metrics: %d %s, %.300s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	cancel() // the demo ends with its context
	<-done
}
