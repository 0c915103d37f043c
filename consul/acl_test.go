package consul_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/consul"
	"github.com/inmesh/inmesh/internal/consultest"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
)

// leastPrivilege is the README's ACL policy for a mesh of service that
// calls the services in calls, rule by rule (one rule a line).
func leastPrivilege(service string, calls ...string) []string {
	rules := []string{
		`key_prefix "inmesh/" { policy = "read" }`,
		`key_prefix "inmesh-status/" { policy = "write" }`,
		fmt.Sprintf(`service %q { policy = "write" }`, service),
		`node_prefix "" { policy = "read" }`,
	}
	for _, c := range calls {
		rules = append(rules, fmt.Sprintf(`service %q { policy = "read" }`, c))
	}
	return rules
}

// aclToken makes a token holding rules on agent, with its management
// token.
func aclToken(t *testing.T, agent *consultest.Agent, rules []string) string {
	t.Helper()
	acl := agent.Client.ACL()
	p, _, err := acl.PolicyCreate(&api.ACLPolicy{Name: fmt.Sprintf("p%d", time.Now().UnixNano()), Rules: strings.Join(rules, "\n")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := acl.TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: p.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok.SecretID
}

// TestConsulACLLeastPrivilege runs meshes on an agent with ACLs on and
// default deny, with the README's least-privilege tokens, given as
// Config.Token to a client that has none (billing, rogue) or as the
// client's own token, as CONSUL_HTTP_TOKEN sets it (web): billing
// registers and serves, web (allowed by an intention) calls it, and rogue
// (no intention names it) is denied by the default.
func TestConsulACLLeastPrivilege(t *testing.T) {
	t.Parallel()
	agent := consultest.StartACL(t)
	putKV(t, agent.Client, "inmesh/services/billing", "{}")
	putKV(t, agent.Client, "inmesh/services/web", "{}")
	putKV(t, agent.Client, "inmesh/services/rogue", "{}")
	if _, _, err := agent.Client.ConfigEntries().Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "billing",
		Sources: []*api.SourceIntention{{Name: "web", Action: api.IntentionActionAllow}}}, nil); err != nil {
		t.Fatal(err)
	}
	anonymous := agent.ClientWithToken(t, "")
	with := func(service string, calls ...string) consul.Config {
		return consul.Config{Client: anonymous, Token: aclToken(t, agent, leastPrivilege(service, calls...))}
	}
	billing := meshWith(t, with("billing"), "billing")
	serveRegistered(t, billing, "ok")
	web := meshOn(t, agent.ClientWithToken(t, aclToken(t, agent, leastPrivilege("web", "billing"))), "web")
	rogue := meshWith(t, with("rogue", "billing"), "rogue")

	meshtest.Eventually(t, 20*time.Second, "web reaches billing", func() bool {
		code, body, err := get(t, web, "http://billing/x")
		return err == nil && code == http.StatusOK && body == "ok"
	})
	code, _, err := get(t, rogue, "http://billing/x")
	if err == nil && code == http.StatusOK {
		t.Fatal("rogue, which no intention names, was allowed under default deny")
	}
	t.Logf("rogue: %d %v", code, err)
}

// TestConsulACLMissingPermission starts a mesh with the least-privilege
// token minus one rule: mesh.New fails with an error naming that rule.
func TestConsulACLMissingPermission(t *testing.T) {
	t.Parallel()
	agent := consultest.StartACL(t)
	putKV(t, agent.Client, "inmesh/services/billing", "{}")
	anonymous := agent.ClientWithToken(t, "")
	full := leastPrivilege("billing")
	for _, tc := range []struct {
		name    string
		rules   []string
		rule    string // ACLError.Rule
		access  string
		message string
	}{
		{"no policy read", without(full, `key_prefix "inmesh/"`), `key_prefix "inmesh/"`, "read",
			`the token lacks key_prefix "inmesh/" read (for the policy under inmesh/): add key_prefix "inmesh/" { policy = "read" }`},
		{"no service rule", without(full, `service "billing"`), `service "billing"`, "read",
			`the token lacks service "billing" read (for the intentions of billing)`},
		{"service read only", append(without(full, `service "billing"`), `service "billing" { policy = "read" }`), `service "billing"`, "write",
			`the token lacks service "billing" write (for the Connect leaf certificate of billing)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cfg := consul.Config{Client: anonymous, Token: aclToken(t, agent, tc.rules)}
			m, err := mesh.New(ctx, mesh.WithService("billing"), mesh.WithControlPlane(consul.New(cfg)), mesh.WithLogger(meshtest.QuietLogger()))
			if err == nil {
				m.Close()
				t.Fatal("mesh.New succeeded")
			}
			var ae *consul.ACLError
			if !errors.As(err, &ae) || ae.Rule != tc.rule || ae.Access != tc.access {
				t.Fatalf("got %v, want an ACLError for %s %s", err, tc.rule, tc.access)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("error %q does not say %q", err, tc.message)
			}
		})
	}

	// Registration needs service write: a mesh given its own identity
	// (no leaf needed) with service read starts, and Register names it.
	cfg := consul.Config{Client: anonymous, Token: aclToken(t, agent,
		append(without(full, `service "billing"`), `service "billing" { policy = "read" }`))}
	m := meshWith(t, cfg, "billing", mesh.WithIdentity(mustDevSource(t, "billing")))
	err := m.Register(context.Background(), mesh.Instance{Address: "127.0.0.1:1"})
	var ae *consul.ACLError
	if !errors.As(err, &ae) || ae.Rule != `service "billing"` || ae.Access != "write" || !strings.Contains(err.Error(), "registering billing") {
		t.Fatalf("Register: got %v, want an ACLError for service \"billing\" write", err)
	}
}

// without returns rules minus the ones on resource.
func without(rules []string, resource string) []string {
	var out []string
	for _, r := range rules {
		if !strings.HasPrefix(r, resource+" ") {
			out = append(out, r)
		}
	}
	return out
}

// TestConsulACLNarrowedTokenKeepsPolicy narrows a running mesh's token so
// that it may no longer read the policy: Consul then filters the KV list
// down to nothing, which must not read as every key deleted. The mesh
// keeps its policy and logs the missing rule.
func TestConsulACLNarrowedTokenKeepsPolicy(t *testing.T) {
	t.Parallel()
	agent := consultest.StartACL(t)
	putKV(t, agent.Client, "inmesh/services/billing", `{"timeout": "3s"}`)
	putKV(t, agent.Client, "inmesh/services/web", "{}")
	acl := agent.Client.ACL()
	rules := leastPrivilege("web", "billing")
	p, _, err := acl.PolicyCreate(&api.ACLPolicy{Name: "web", Rules: strings.Join(rules, "\n")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := acl.TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: p.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs meshtest.LockedBuffer
	m := meshWith(t, consul.Config{Client: agent.ClientWithToken(t, ""), Token: tok.SecretID}, "web",
		mesh.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	if e := adminConfig(t, m).Effective["billing"]; e == nil || e.Effective.Timeout != "3s" {
		t.Fatalf("billing's policy not in force: %+v", adminConfig(t, m))
	}

	p.Rules = strings.Join(without(rules, `key_prefix "inmesh/"`), "\n")
	if _, _, err := acl.PolicyUpdate(p, nil); err != nil {
		t.Fatal(err)
	}
	// The agent applies a policy change to its resolved tokens a moment
	// later.
	narrowed := agent.ClientWithToken(t, tok.SecretID)
	meshtest.Eventually(t, 20*time.Second, "the narrowed token in force", func() bool {
		_, _, err := narrowed.KV().Get("inmesh/services/billing", nil)
		return err != nil && strings.Contains(err.Error(), "403")
	})
	// A long poll in flight when the token changed still answers with
	// the rights it started with (Consul resolves the token once per
	// query): the first write may apply. The next query has the narrowed
	// token and gets a filtered answer.
	refused := func() bool { return strings.Contains(logs.String(), `the token lacks key_prefix \"inmesh/\" read`) }
	putKV(t, agent.Client, "inmesh/services/billing", `{"timeout": "4s"}`)
	meshtest.Eventually(t, 20*time.Second, "the first write after the change answered", func() bool {
		return refused() || adminConfig(t, m).Effective["billing"].Effective.Timeout == "4s"
	})
	kept := adminConfig(t, m).Effective["billing"].Effective.Timeout
	version := m.PolicyVersion()
	putKV(t, agent.Client, "inmesh/services/billing", `{"timeout": "5s"}`)
	meshtest.Eventually(t, 20*time.Second, "the filtered answer refused", refused)
	if got := m.PolicyVersion(); got != version {
		t.Fatalf("policy version %q, want %q kept", got, version)
	}
	if e := adminConfig(t, m).Effective["billing"]; e == nil || e.Effective.Timeout != kept {
		t.Fatalf("billing's policy lost or changed: %+v, want timeout %s kept", e, kept)
	}
}

// TestConsulConfigTokenOnEveryRequest gives Config.Token to a client that
// has none, through a counting proxy: every request the control plane
// sends, for the policy, the config entries, the endpoints, the leaf, the
// intentions, the registration and the status, carries the token.
func TestConsulConfigTokenOnEveryRequest(t *testing.T) {
	t.Parallel()
	agent := consultest.StartACL(t)
	putKV(t, agent.Client, "inmesh/services/billing", "{}")
	putKV(t, agent.Client, "inmesh/services/web", "{}")
	if _, _, err := agent.Client.ConfigEntries().Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "billing",
		Sources: []*api.SourceIntention{{Name: "web", Action: api.IntentionActionAllow}}}, nil); err != nil {
		t.Fatal(err)
	}
	counter := agent.Counting(t)
	billing := meshWith(t, consul.Config{Client: counter.Client, Token: aclToken(t, agent, leastPrivilege("billing"))}, "billing")
	serveRegistered(t, billing, "ok")
	web := meshWith(t, consul.Config{Client: counter.Client, Token: aclToken(t, agent, leastPrivilege("web", "billing"))}, "web")
	meshtest.Eventually(t, 20*time.Second, "web reaches billing", func() bool {
		code, body, err := get(t, web, "http://billing/x")
		return err == nil && code == http.StatusOK && body == "ok"
	})
	if n := counter.WithoutToken(); len(n) > 0 {
		t.Fatalf("requests without the token: %v (all: %v)", n, counter.Requests())
	}
	t.Logf("requests: %v", counter.Requests())
}
