package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/policy"
)

// cliCaller is the caller explain names by default.
const cliCaller = "inmesh-cli"

// explain loads a policy file into a mesh and prints what it would do with
// the request described by the arguments.
func explain(args []string, stdout, stderr io.Writer) int {
	c := newCommand("explain", `inmesh explain [-o text|json] [--as SERVICE] FILE URL [-H name:value]... [-X METHOD]

Says what a mesh with the policy FILE would do with a request to URL: the
route, split, endpoints, timeout, attempts, breaker, TLS, protections and
the authorization the caller SERVICE would meet. Exits 0 when the mesh
would send the request, 1 when it would fail it, saying at which layer.`, stderr)
	var headers stringList
	c.fs.Var(&headers, "H", "request header name:value (repeatable)")
	c.fs.Var(&headers, "header", "the same as -H")
	method := c.fs.String("X", http.MethodGet, "request method")
	c.fs.StringVar(method, "method", http.MethodGet, "the same as -X")
	caller := c.fs.String("as", cliCaller, "explain as this calling service: the authorization line is the one it would meet")
	out := c.outputFlag()
	asJSON := c.fs.Bool("json", false, "the same as -o json")
	pos, code, done := c.parse(args, stdout, stderr)
	if done {
		return code
	}
	if len(pos) != 2 {
		return c.usageError(stderr)
	}
	if *caller == "" {
		fmt.Fprint(stderr, "inmesh explain: --as: want a service name\n")
		return 2
	}
	snap, err := load(pos[0])
	if err != nil {
		printProblems(stderr, pos[0], err)
		return 1
	}
	req, err := http.NewRequest(strings.ToUpper(*method), pos[1], nil)
	if err != nil {
		fmt.Fprintf(stderr, "inmesh explain: url: %v\n", err)
		return 2
	}
	for _, h := range headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			fmt.Fprintf(stderr, "inmesh explain: header %q: want name:value\n", h)
			return 2
		}
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := mesh.New(ctx, mesh.WithService(cliCaller), mesh.WithPolicy(snap.Doc),
		mesh.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		fmt.Fprintf(stderr, "inmesh explain: %v\n", err)
		return 1
	}
	defer m.Close()

	ex, err := m.ExplainAs(req, *caller)
	if ex == nil {
		fmt.Fprintf(stderr, "inmesh explain: %v\n", err)
		return 1
	}
	if *asJSON || *out == "json" {
		writeJSON(stdout, ex)
	} else {
		printExplanation(stdout, ex, *caller)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return 1
	}
	return 0
}

func printExplanation(w io.Writer, ex *mesh.Explanation, caller string) {
	line := func(k, v string) { fmt.Fprintf(w, "%-10s %s\n", k+":", v) }
	line("service", ex.Service)
	line("policy", ex.PolicyVersion)
	if ex.Passthrough {
		line("outcome", "passthrough: not a service of the policy, sent untouched")
		return
	}
	if ex.Layer != "" {
		line("outcome", fmt.Sprintf("fails at layer %s: %s", ex.Layer, ex.Error))
	}
	if ex.Route == "" && (ex.Layer == mesh.LayerRoute || ex.Layer == mesh.LayerEgress || ex.Layer == mesh.LayerPolicy) {
		return // nothing was matched: no route to show
	}
	line("route", orDash(ex.Route))
	var split []string
	for _, s := range ex.Split {
		split = append(split, fmt.Sprintf("%s=%d", policy.Target{Service: s.Service, Subset: s.Subset}, s.Weight))
	}
	line("split", orDash(strings.Join(split, " ")))
	if ex.PrefixRewrite != "" {
		line("rewrite", fmt.Sprintf("prefix to %s: sent as %s", ex.PrefixRewrite, ex.RewrittenPath))
	}
	if hm := ex.RequestHeaders; hm != nil {
		line("headers", headerChanges(hm))
	}
	line("endpoints", orDash(strings.Join(ex.Endpoints, ", ")))
	timeout := "caller's context only"
	if ex.Timeout > 0 {
		timeout = ex.Timeout.String()
	}
	if ex.PerTryTimeout > 0 {
		timeout += fmt.Sprintf(" (per try %s)", ex.PerTryTimeout)
	}
	line("timeout", timeout)
	attempts := fmt.Sprint(ex.Attempts)
	if len(ex.RetryOn) > 0 && ex.Attempts > 1 {
		attempts += " on " + strings.Join(ex.RetryOn, ", ")
	}
	line("attempts", attempts)
	line("balancer", ex.LoadBalancer)
	if ex.HasBreaker {
		line("breaker", ex.Breaker)
	} else {
		line("breaker", "none configured")
	}
	line("tls", ex.TLS)
	if c := ex.Concurrency; c != nil {
		limit := fmt.Sprintf("max %d", c.Max)
		if a := c.Adaptive; a != nil {
			limit = fmt.Sprintf("adaptive %d..%d, now %d", a.Min, a.Max, c.Limit)
		}
		if c.MaxWait > 0 {
			limit += fmt.Sprintf(", queue up to %s", c.MaxWait)
		} else {
			limit += ", refused at once when full"
		}
		line("limit", "concurrency "+limit)
	}
	if h := ex.Hedge; h != nil {
		after := h.Delay.String()
		if h.Quantile != "" {
			after = h.Quantile + " of recent latency"
		}
		line("hedge", fmt.Sprintf("up to %d more attempt(s) after %s", h.Max, after))
	}
	if f := ex.Fault; f != nil {
		line("FAULT", "injection active: "+faultText(f))
	}
	if ex.Authorization != "" {
		line("authz", ex.Authorization+" (as caller "+caller+")")
	}
	if r := ex.RateLimit; r != nil {
		who := "all callers together"
		if r.PerCaller {
			who = "per calling service"
		}
		line("ratelimit", fmt.Sprintf("%g/s, burst %d, %s (enforced by %s's mesh)", r.RequestsPerSecond, r.Burst, who, ex.Service))
	}
	printReasons(w, ex)
}

// printReasons writes why: the routes tried, then the reason of each
// decision, which starts with the value decided and names where in the
// document its setting came from.
func printReasons(w io.Writer, ex *mesh.Explanation) {
	r := ex.Reasons
	reasons := []struct{ k, v string }{
		{"split", r.Split}, {"timeout", r.Timeout}, {"per try", r.PerTryTimeout}, {"attempts", r.Attempts},
		{"balancer", r.LoadBalancer}, {"breaker", r.Breaker}, {"outlier", r.Outlier}, {"limit", r.Concurrency},
		{"hedge", r.Hedge}, {"fault", r.Fault}, {"tls", r.TLS}, {"authz", r.Authorization},
	}
	var lines []string
	for _, d := range ex.Routes {
		name := d.Name
		if name == "" {
			name = "(implicit)"
		}
		lines = append(lines, fmt.Sprintf("  %-10s %s: %s", "route", name, d.Reason))
	}
	for _, rs := range reasons {
		if rs.v != "" {
			lines = append(lines, fmt.Sprintf("  %-10s %s", rs.k, rs.v))
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintln(w, "why:")
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}

// faultText says what fault injection f does.
func faultText(f *policy.Fault) string {
	var parts []string
	if d := f.Delay; d != nil {
		parts = append(parts, fmt.Sprintf("delay %s on %g%%", d.Duration, d.Percent))
	}
	if a := f.Abort; a != nil {
		parts = append(parts, fmt.Sprintf("abort (HTTP %d, gRPC %s) on %g%%", a.HTTPStatus, a.GRPCCode, a.Percent))
	}
	if f.OnlyWithHeader != "" {
		parts = append(parts, "only with header "+f.OnlyWithHeader)
	}
	return strings.Join(parts, ", ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// headerChanges writes a route's request_headers in one line: "add x-tag:
// a; set x-env: prod; remove x-debug", names in order.
func headerChanges(hm *policy.HeaderMutation) string {
	var parts []string
	for _, op := range []struct {
		name string
		m    map[string]string
	}{{"add", hm.Add}, {"set", hm.Set}} {
		keys := make([]string, 0, len(op.m))
		for k := range op.m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %s: %s", op.name, k, op.m[k]))
		}
	}
	for _, k := range hm.Remove {
		parts = append(parts, "remove "+k)
	}
	return strings.Join(parts, "; ")
}
