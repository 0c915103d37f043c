package identity_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"

	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/policy"
)

func ExampleParseID() {
	id, err := identity.ParseID("spiffe://mesh.local/ns/default/dc/dc1/svc/billing")
	if err != nil {
		fmt.Println(err)
		return
	}
	svc, ok := id.Service()
	fmt.Println(id.TrustDomain(), id.Path(), svc, ok)

	_, err = identity.ParseID("spiffe://mesh.local/svc/..")
	fmt.Println(err)
	// Output:
	// mesh.local /ns/default/dc/dc1/svc/billing billing true
	// identity: spiffe id "spiffe://mesh.local/svc/..": path segment "..": dot segments are not allowed
}

func ExampleNewServiceID() {
	id, err := identity.NewServiceID("mesh.local", "billing")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(id)
	// Output: spiffe://mesh.local/svc/billing
}

func ExampleNewAuthorizer() {
	z := identity.NewAuthorizer(policy.Authorization{
		Default: "deny",
		Rules: []policy.Rule{
			{From: []string{"enrollment", "progress"}, Paths: []string{"/charge"}, Methods: []string{"POST"}},
			{From: []string{"admin"}},
		},
	})
	for _, call := range [][3]string{
		{"enrollment", "POST", "/charge"},
		{"enrollment", "GET", "/charge"},
		{"admin", "DELETE", "/accounts/7"},
		{"", "GET", "/"},
	} {
		d := z.Authorize(call[0], call[1], call[2])
		fmt.Printf("%-10s %-6s %-12s allow=%v rule=%d (%s)\n", call[0], call[1], call[2], d.Allow, d.Rule, d.Reason)
	}
	// Output:
	// enrollment POST   /charge      allow=true rule=0 (rule 0)
	// enrollment GET    /charge      allow=false rule=-1 (default deny)
	// admin      DELETE /accounts/7  allow=true rule=1 (rule 1)
	//            GET    /            allow=false rule=-1 (no caller identity)
}

// Mutual TLS between two services of one dev CA, on loopback: each side
// learns the other's SPIFFE ID.
func ExampleClientConfig() {
	ca, err := identity.NewDevCA("mesh.local")
	if err != nil {
		fmt.Println(err)
		return
	}
	billing, err := ca.NewSource("billing")
	if err != nil {
		fmt.Println(err)
		return
	}
	web, err := ca.NewSource("web")
	if err != nil {
		fmt.Println(err)
		return
	}

	ln, err := tls.Listen("tcp", "127.0.0.1:0", identity.ServerConfig(billing))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()
	served := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err.Error()
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			served <- err.Error()
			return
		}
		state := tc.ConnectionState()
		caller, err := identity.PeerIDFromState(&state)
		if err != nil {
			served <- err.Error()
			return
		}
		_, _ = io.WriteString(c, "hello")
		served <- "server sees " + caller.String()
	}()

	conn, err := tls.Dial("tcp", ln.Addr().String(), identity.ClientConfig(web, "billing"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	if _, err := io.ReadAll(conn); err != nil && err != io.EOF {
		fmt.Println(err)
	}
	state := conn.ConnectionState()
	server, _ := identity.PeerIDFromState(&state)
	fmt.Println("client sees", server)
	fmt.Println(<-served)
	// Output:
	// client sees spiffe://mesh.local/svc/billing
	// server sees spiffe://mesh.local/svc/web
}

// A client that reaches the wrong service refuses it.
func ExampleVerifyError() {
	ca, _ := identity.NewDevCA("mesh.local")
	evil := ca.Source("evil")
	web := ca.Source("web")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", identity.ServerConfig(evil))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if c, err := ln.Accept(); err == nil {
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	_, err = tls.DialWithDialer(&net.Dialer{}, "tcp", ln.Addr().String(), identity.ClientConfig(web, "billing"))
	<-done
	fmt.Println(err)
	fmt.Println(identity.ReasonOf(err))
	// Output:
	// identity: peer spiffe://mesh.local/svc/evil: wrong service: want billing
	// wrong service
}

// Cross-rotation of the dev CA: a new root signs new leaves while the old one
// stays trusted, until it is dropped.
func ExampleDevCA_Rotate() {
	ca, err := identity.NewDevCA("mesh.local")
	if err != nil {
		fmt.Println(err)
		return
	}
	src := ca.Source("billing")
	old := ca.Roots()[0]
	changed := src.Changed()
	if err := ca.Rotate(); err != nil {
		fmt.Println(err)
		return
	}
	<-changed // the source has a leaf of the new root
	id, _ := src.Current()
	fmt.Println("roots after Rotate:", len(id.Roots))
	if err := ca.DropRoot(old.SerialNumber.Text(16)); err != nil {
		fmt.Println(err)
		return
	}
	id, _ = src.Current()
	fmt.Println("roots after DropRoot:", len(id.Roots))
	// Output:
	// roots after Rotate: 2
	// roots after DropRoot: 1
}
