package gateway

import (
	"math"
	"net/netip"

	"github.com/imagegate/imagegate/inference"
)

// schedulingFor is how the tier should queue py's generations: a fairness
// key the tier can compare but not trace (an HMAC under the gateway's
// salt, promise X1) and the payer's plan as its class. A visitor without
// an account shares a key with its network (/24 or /48), as its free quota
// does, so rotating addresses within a block buys no extra share.
func (g *Gateway) schedulingFor(py payer) inference.Scheduling {
	subject := "account:" + py.accountID
	if py.accountID == "" {
		subject = "network:" + networkOf(py.addr).String()
	}
	return inference.Scheduling{
		FairnessKey: inference.FairnessKey(g.cfg.FairnessSalt, subject),
		PlanClass:   py.planName,
	}
}

// networkOf is the block a single site usually holds: an IPv4 /24, an
// IPv6 /48.
func networkOf(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 48
	if a.Is4() {
		bits = 24
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}

// retryAfterSeconds is the whole seconds a 503 asks the client to wait:
// the tier's own estimate when it refused admission, rounded up, else
// fallback.
func retryAfterSeconds(err error, fallback int) int {
	d, ok := inference.RetryAfter(err)
	if !ok {
		return fallback
	}
	return max(1, int(math.Ceil(d.Seconds())))
}
