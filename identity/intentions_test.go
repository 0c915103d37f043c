package identity_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/identity"
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
	in, err := identity.CompileIntentions(entry, false)
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
	if _, err := identity.CompileIntentions(&api.ServiceIntentionsConfigEntry{Name: "b", Sources: []*api.SourceIntention{
		{Name: "a", Permissions: []*api.IntentionPermission{{Action: "allow", HTTP: &api.IntentionHTTPPermission{PathRegex: "("}}}},
	}}, true); err == nil {
		t.Error("a bad regex compiled")
	}
}

func TestIntentionsSourceFollowsConsul(t *testing.T) {
	agent := consultest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src, err := identity.NewIntentionsSource(ctx, agent.Client, "billing", nil)
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
