package core

import "testing"

func TestServiceOf(t *testing.T) {
	for host, want := range map[string]string{
		"billing": "billing", "Billing": "billing", "BILLING": "billing", "billing.": "billing",
		"BILLING.:80": "billing", "billing:8080": "billing", "billing.:443": "billing", "bIlLiNg.": "billing",
		"billing..": "billing.", // not a DNS name: matches no service
		"a.b.svc":   "a.b.svc", "A.B.SVC.": "a.b.svc",
		"[::1]:80": "[::1]", "[::1]": "[::1]", "[fe80::1%25en0]:8080": "[fe80::1%25en0]",
		"127.0.0.1:80": "127.0.0.1", "": "",
		"\u212aafka": "\u212aafka", // the Kelvin sign is no "k" for DNS
	} {
		if got := ServiceOf(host); got != want {
			t.Errorf("ServiceOf(%q) = %q, want %q", host, got, want)
		}
	}
}
