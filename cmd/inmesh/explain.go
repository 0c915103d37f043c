package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/inmesh/inmesh/mesh"
)

// explain loads a policy file into a mesh and prints what it would do with
// the request described by the arguments.
func explain(args []string, stdout, stderr io.Writer) int {
	var (
		pos     []string
		headers []string
		method  = http.MethodGet
		asJSON  bool
	)
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch a {
		case "-H", "--header", "-X", "--method":
			if i+1 >= len(args) {
				fmt.Fprintf(stderr, "inmesh explain: %s needs a value\n", a)
				return 2
			}
			i++
			if a == "-H" || a == "--header" {
				headers = append(headers, args[i])
			} else {
				method = strings.ToUpper(args[i])
			}
		case "--json":
			asJSON = true
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		fmt.Fprint(stderr, "usage: inmesh explain [--json] FILE URL [-H name:value]... [-X METHOD]\n")
		return 2
	}
	snap, err := load(pos[0])
	if err != nil {
		printProblems(stderr, pos[0], err)
		return 1
	}
	req, err := http.NewRequest(method, pos[1], nil)
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
	m, err := mesh.New(ctx, mesh.WithService("inmesh-cli"), mesh.WithPolicy(snap.Doc),
		mesh.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		fmt.Fprintf(stderr, "inmesh explain: %v\n", err)
		return 1
	}
	defer m.Close()

	ex, err := m.Explain(req)
	if ex == nil {
		fmt.Fprintf(stderr, "inmesh explain: %v\n", err)
		return 1
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(ex)
	} else {
		printExplanation(stdout, ex)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return 1
	}
	return 0
}

func printExplanation(w io.Writer, ex *mesh.Explanation) {
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
		split = append(split, fmt.Sprintf("%s=%d", s.Subset, s.Weight))
	}
	line("split", orDash(strings.Join(split, " ")))
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
		line("FAULT", "injection active: "+strings.Join(parts, ", "))
	}
	if ex.Authorization != "" {
		line("authz", ex.Authorization+" (as caller inmesh-cli)")
	}
	if r := ex.RateLimit; r != nil {
		who := "all callers together"
		if r.PerCaller {
			who = "per calling service"
		}
		line("ratelimit", fmt.Sprintf("%g/s, burst %d, %s (enforced by %s's mesh)", r.RequestsPerSecond, r.Burst, who, ex.Service))
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
