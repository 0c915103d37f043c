package identity

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"
)

// BenchmarkHandshake measures one mutual-TLS connection over loopback,
// client and server side together: dial, handshake with VerifyConnection on
// both sides, one byte from the server, close. "resumed" reuses a session
// ticket, which still runs VerifyConnection (chain verification included)
// on both sides.
func BenchmarkHandshake(b *testing.B) {
	for _, version := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		for _, resumed := range []bool{false, true} {
			name := tls.VersionName(version) + "/full"
			if resumed {
				name = tls.VersionName(version) + "/resumed"
			}
			b.Run(name, func(b *testing.B) {
				ca := newTestCA(b)
				addr, _ := startTLSServer(b, ServerConfig(mustSource(b, ca, "billing")))
				cfg := ClientConfig(mustSource(b, ca, "web"), "billing")
				cfg.MaxVersion = version
				if resumed {
					cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
					if _, err := dialTLS(addr, cfg); err != nil { // get a ticket
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				for b.Loop() {
					cs, err := dialTLS(addr, cfg)
					if err != nil {
						b.Fatal(err)
					}
					if cs.DidResume != resumed {
						b.Fatalf("DidResume = %v", cs.DidResume)
					}
				}
			})
		}
	}
}

// BenchmarkVerifyPeer is the verification VerifyConnection runs on each
// handshake, full or resumed.
func BenchmarkVerifyPeer(b *testing.B) {
	ca := newTestCA(b)
	self := mustCurrent(b, mustSource(b, ca, "billing"))
	chain := mustCurrent(b, mustSource(b, ca, "web")).Certificate.Leaf
	b.ReportAllocs()
	for b.Loop() {
		if _, err := VerifyPeer([]*x509.Certificate{chain}, self, x509.ExtKeyUsageClientAuth, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDevSourceCurrent is the per-handshake cost of asking a dev CA
// source for its identity (no renewal due).
func BenchmarkDevSourceCurrent(b *testing.B) {
	src := mustSource(b, newTestCA(b), "billing")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := src.Current(); err != nil {
			b.Fatal(err)
		}
	}
}
