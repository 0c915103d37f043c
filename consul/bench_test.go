package consul

import (
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/mesh"
)

// BenchmarkIntentionsAuthorize measures what a mesh's Handler asks per
// request with Consul: the compiled intentions in force, an L7 decision
// with a path and a header condition.
func BenchmarkIntentionsAuthorize(b *testing.B) {
	in, err := CompileIntentions(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "billing", Sources: []*api.SourceIntention{
		{Name: "web", Permissions: []*api.IntentionPermission{
			{Action: api.IntentionActionDeny, HTTP: &api.IntentionHTTPPermission{PathPrefix: "/admin"}},
			{Action: api.IntentionActionDeny, HTTP: &api.IntentionHTTPPermission{
				Header: []api.IntentionHTTPHeaderPermission{{Name: "X-Role", Exact: "guest"}}}},
			{Action: api.IntentionActionAllow, HTTP: &api.IntentionHTTPPermission{PathPrefix: "/"}},
		}},
	}}, false)
	if err != nil {
		b.Fatal(err)
	}
	s := &IntentionsSource{}
	s.val.start()
	defer s.Close()
	s.val.set(in)
	var header mesh.RequestHeader
	if d := s.authorizeRequest("web", "GET", "/charge", header); !d.Allow {
		b.Fatalf("denied: %s", d.Reason)
	}
	b.Run("source", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if d := s.authorizeRequest("web", "GET", "/charge", header); !d.Allow {
				b.Fatal("denied")
			}
		}
	})
	// The same decision asked of the intentions directly: what the source
	// adds is nothing (the allocations are the decision's reason text).
	b.Run("intentions", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if d := in.Authorize("web", "GET", "/charge", nil); !d.Allow {
				b.Fatal("denied")
			}
		}
	})
}
