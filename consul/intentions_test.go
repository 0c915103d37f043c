package consul_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/consul"
	"github.com/inmesh/inmesh/internal/consultest"
)

func TestCompileIntentions(t *testing.T) {
	entry := &api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "billing", Sources: []*api.SourceIntention{
		{Name: "enrollment", Permissions: []*api.IntentionPermission{
			{Action: api.IntentionActionDeny, HTTP: &api.IntentionHTTPPermission{PathPrefix: "/charge/admin"}},
			{Action: api.IntentionActionAllow, HTTP: &api.IntentionHTTPPermission{PathPrefix: "/charge", Methods: []string{"POST"}}},
			{Action: api.IntentionActionAllow, HTTP: &api.IntentionHTTPPermission{PathRegex: "/invoices/[0-9]+",
				Header: []api.IntentionHTTPHeaderPermission{{Name: "X-Tenant", Prefix: "acme"}}}},
		}},
		{Name: "progress", Action: api.IntentionActionDeny},
		{Name: "*", Action: api.IntentionActionAllow},
	}}
	in, err := consul.CompileIntentions(entry, false)
	if err != nil {
		t.Fatal(err)
	}
	hdr := func(h http.Header) func(string) []string { return func(k string) []string { return h.Values(k) } }
	tests := []struct {
		caller, method, path string
		header               http.Header
		want                 bool
	}{
		{"enrollment", "POST", "/charge", nil, true},
		{"enrollment", "GET", "/charge", nil, false},          // no permission matches: the default (deny)
		{"enrollment", "POST", "/charge/admin/x", nil, false}, // the first matching permission decides
		{"enrollment", "GET", "/invoices/42", http.Header{"X-Tenant": {"acme-eu"}}, true},
		{"enrollment", "GET", "/invoices/42", http.Header{"X-Tenant": {"other"}}, false},
		{"enrollment", "GET", "/invoices/42x", http.Header{"X-Tenant": {"acme"}}, false},
		{"progress", "GET", "/", nil, false}, // exact source beats the wildcard
		{"catalog", "GET", "/", nil, true},   // the wildcard
		{"", "GET", "/", nil, false},         // deny on error: no caller
	}
	for _, tc := range tests {
		d := in.Authorize(tc.caller, tc.method, tc.path, hdr(tc.header))
		if d.Allow != tc.want {
			t.Errorf("%s %s %s: allow=%v (%s), want %v", tc.caller, tc.method, tc.path, d.Allow, d.Reason, tc.want)
		}
	}
	if _, err := consul.CompileIntentions(&api.ServiceIntentionsConfigEntry{Name: "b", Sources: []*api.SourceIntention{
		{Name: "a", Permissions: []*api.IntentionPermission{{Action: "allow", HTTP: &api.IntentionHTTPPermission{PathRegex: "("}}}},
	}}, true); err == nil {
		t.Error("a bad regex compiled")
	}
}

func TestIntentionsSourceFollowsConsul(t *testing.T) {
	agent := consultest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src, err := consul.NewIntentionsSource(ctx, agent.Client, "billing", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	// No entry and ACLs off (a dev agent): allowed.
	if d := src.Current().Authorize("enrollment", "POST", "/charge", nil); !d.Allow {
		t.Fatalf("no intentions, ACLs off: %s", d.Reason)
	}
	entries := agent.Client.ConfigEntries()
	if _, _, err := entries.Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "billing", Protocol: "http"}, nil); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, _, err := entries.Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "billing", Sources: []*api.SourceIntention{
		{Name: "enrollment", Permissions: []*api.IntentionPermission{
			{Action: api.IntentionActionAllow, HTTP: &api.IntentionHTTPPermission{PathPrefix: "/charge", Methods: []string{"POST"}}}}},
		{Name: "progress", Action: api.IntentionActionDeny},
	}}, nil); err != nil {
		t.Fatal(err)
	}
	for src.Current().Authorize("progress", "POST", "/charge", nil).Allow {
		if time.Since(start) > 10*time.Second {
			t.Fatal("the deny never arrived")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("deny intention applied after %v", time.Since(start))
	if d := src.Current().Authorize("enrollment", "GET", "/charge", nil); d.Allow != true {
		// no permission matches: the default, allow with ACLs off
		t.Fatalf("enrollment GET: %s", d.Reason)
	}
}

// TestIntentionsPathAndHeaderBypasses tries the respellings of a path and
// the duplicated headers that must not turn a deny into an allow.
func TestIntentionsPathAndHeaderBypasses(t *testing.T) {
	allow, deny := api.IntentionActionAllow, api.IntentionActionDeny
	perm := func(action api.IntentionAction, h api.IntentionHTTPPermission) *api.IntentionPermission {
		return &api.IntentionPermission{Action: action, HTTP: &h}
	}
	header := func(hp ...api.IntentionHTTPHeaderPermission) []api.IntentionHTTPHeaderPermission { return hp }
	entry := &api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "billing", Sources: []*api.SourceIntention{
		{Name: "web", Permissions: []*api.IntentionPermission{
			perm(deny, api.IntentionHTTPPermission{PathPrefix: "/admin"}),
			perm(deny, api.IntentionHTTPPermission{PathExact: "/internal"}),
			perm(deny, api.IntentionHTTPPermission{PathRegex: "/secret/.*"}),
			perm(deny, api.IntentionHTTPPermission{Header: header(api.IntentionHTTPHeaderPermission{Name: "X-Role", Exact: "guest"})}),
			perm(deny, api.IntentionHTTPPermission{Header: header(api.IntentionHTTPHeaderPermission{Name: "X-Region", Exact: "eu", Invert: true})}),
			perm(allow, api.IntentionHTTPPermission{PathPrefix: "/"}),
		}},
		{Name: "ui", Permissions: []*api.IntentionPermission{
			perm(allow, api.IntentionHTTPPermission{PathRegex: "/invoices/[0-9]+",
				Header: header(api.IntentionHTTPHeaderPermission{Name: "X-Tenant", Exact: "acme"})}),
			perm(allow, api.IntentionHTTPPermission{PathPrefix: "/reports",
				Header: header(api.IntentionHTTPHeaderPermission{Name: "X-Env", Exact: "prod", Invert: true})}),
		}},
		{Name: "batch", Permissions: []*api.IntentionPermission{
			perm(allow, api.IntentionHTTPPermission{Methods: []string{"GET"}}),
		}},
		{Name: "ops", Action: allow},
	}}
	in, err := consul.CompileIntentions(entry, false)
	if err != nil {
		t.Fatal(err)
	}
	eu := http.Header{"X-Region": {"eu"}}
	tests := []struct {
		name, caller, path string
		header             http.Header
		want               bool
	}{
		{"plain allow", "web", "/public", eu, true},
		{"plain deny", "web", "/admin/users", eu, false},
		{"dot-dot", "web", "/public/../admin", eu, false},
		{"escaped dot-dot", "web", "/public/%2e%2e/admin", eu, false},
		{"upper-case escaped dot-dot", "web", "/public/%2E%2E/admin", eu, false},
		{"dot-dot escaped slash", "web", "/public/..%2fadmin", eu, false},
		{"escaped slash", "web", "/public%2F..%2Fadmin", eu, false},
		{"double slash", "web", "//admin", eu, false},
		{"dot segment", "web", "/./admin", eu, false},
		{"backslash", "web", `/public\..\admin`, eu, false},
		{"escaped backslash", "web", "/public%5c..%5cadmin", eu, false},
		{"escaped letter of a denied prefix", "web", "/%61dmin", eu, false},
		{"escaped letter of a denied exact path", "web", "/int%65rnal", eu, false},
		{"escaped letter of a denied regex", "web", "/s%65cret/x", eu, false},
		{"escaped letter elsewhere", "web", "/p%75blic", eu, true},
		{"relative path", "web", "admin", eu, false},
		{"deny header", "web", "/public", http.Header{"X-Region": {"eu"}, "X-Role": {"guest"}}, false},
		{"deny header after another value", "web", "/public", http.Header{"X-Region": {"eu"}, "X-Role": {"admin", "guest"}}, false},
		{"deny header before another value", "web", "/public", http.Header{"X-Region": {"eu"}, "X-Role": {"guest", "admin"}}, false},
		{"inverted deny, one bad value", "web", "/public", http.Header{"X-Region": {"eu", "us"}}, false},
		{"inverted deny, missing header", "web", "/public", nil, false},
		{"allow header", "ui", "/invoices/42", http.Header{"X-Tenant": {"acme"}}, true},
		{"allow header twice", "ui", "/invoices/42", http.Header{"X-Tenant": {"acme", "acme"}}, true},
		{"allow header and another value", "ui", "/invoices/42", http.Header{"X-Tenant": {"acme", "evil"}}, false},
		{"another value and allow header", "ui", "/invoices/42", http.Header{"X-Tenant": {"evil", "acme"}}, false},
		{"allow header missing", "ui", "/invoices/42", nil, false},
		{"inverted allow", "ui", "/reports/q3", http.Header{"X-Env": {"dev"}}, true},
		{"inverted allow, one bad value", "ui", "/reports/q3", http.Header{"X-Env": {"dev", "prod"}}, false},
		{"regex on the decoded path", "ui", "/invoices/%34%32", http.Header{"X-Tenant": {"acme"}}, true},
		{"regex, respelled", "ui", "/x/../invoices/42", http.Header{"X-Tenant": {"acme"}}, false},
		{"no path condition: the path does not matter", "batch", "/a/../b", nil, true},
		{"L4 intention: the path does not matter", "ops", "/a/../b", nil, true},
	}
	for _, tc := range tests {
		d := in.Authorize(tc.caller, "GET", tc.path, tc.header.Values)
		if d.Allow != tc.want {
			t.Errorf("%s: %s GET %s %v: allow=%v (%s), want %v", tc.name, tc.caller, tc.path, tc.header, d.Allow, d.Reason, tc.want)
		}
	}
}

// TestIntentionsSourceIdleBlocks counts what the watch sends an agent while
// nothing changes, with and without a service-intentions entry (a missing
// entry is Consul's default state): its one long poll, nothing more.
func TestIntentionsSourceIdleBlocks(t *testing.T) {
	agent := consultest.Start(t)
	entries := agent.Client.ConfigEntries()
	if _, _, err := entries.Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "ledger", Protocol: "http"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := entries.Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "ledger",
		Sources: []*api.SourceIntention{{Name: "web", Action: api.IntentionActionDeny}}}, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		service string
		allowed bool // web's decision
	}{
		{"billing", true}, // no entry: the default, allow with ACLs off
		{"ledger", false},
	} {
		t.Run(tc.service, func(t *testing.T) {
			counter := agent.Counting(t)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			src, err := consul.NewIntentionsSource(ctx, counter.Client, tc.service, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if d := src.Current().Authorize("web", "GET", "/", nil); d.Allow != tc.allowed {
				t.Fatalf("web: %s", d.Reason)
			}
			// Once the watch's long poll is open, 2 s of quiet must cost
			// at most one more request per watched path.
			watched := "/v1/config/service-intentions/" + tc.service
			for counter.InFlight()[watched] == 0 {
				if ctx.Err() != nil {
					t.Fatalf("no long poll opened: %v", counter.Requests())
				}
				time.Sleep(5 * time.Millisecond)
			}
			before := counter.Requests()
			time.Sleep(2 * time.Second)
			after := counter.Requests()
			for path, n := range after {
				if n-before[path] > 1 {
					t.Errorf("%s: %d requests in 2 s of quiet (all: %v then %v)", path, n-before[path], before, after)
				}
			}
			t.Logf("requests: %v; open: %v", after, counter.InFlight())

			// The long poll still sees the change: an entry that appears,
			// one that goes.
			if tc.allowed {
				_, _, err = entries.Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: tc.service,
					Sources: []*api.SourceIntention{{Name: "web", Action: api.IntentionActionDeny}}}, nil)
			} else {
				_, err = entries.Delete(api.ServiceIntentions, tc.service, nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			for src.Current().Authorize("web", "GET", "/", nil).Allow == tc.allowed {
				if ctx.Err() != nil {
					t.Fatal("the change never arrived")
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}
