package mesh

import "testing"

// TestCallErrorTemporary: Temporary holds for exactly the layers a later
// call may get past without a change of policy or identity.
func TestCallErrorTemporary(t *testing.T) {
	for _, tc := range []struct {
		layer     Layer
		temporary bool
	}{
		{LayerPolicy, false},
		{LayerRoute, false},
		{LayerDiscovery, true},
		{LayerBreaker, true},
		{LayerBudget, true},
		{LayerTimeout, true},
		{LayerTLS, false},
		{LayerAuthz, false},
		{LayerConnect, true},
		{LayerUpstream, true},
		{LayerEgress, false},
		{LayerOverload, true},
		{LayerRateLimit, true},
		{LayerFault, false},
		{Layer("unknown"), false},
	} {
		if got := (&CallError{Layer: tc.layer}).Temporary(); got != tc.temporary {
			t.Errorf("layer %s: Temporary() = %v, want %v", tc.layer, got, tc.temporary)
		}
	}
}
