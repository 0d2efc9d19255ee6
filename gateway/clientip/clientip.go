// Package clientip owns the answer to "whose request is this?": the
// client address of a request, which is the TCP peer's unless the peer is
// one of the operator's trusted proxies, in which case it is read from the
// one header those proxies set. Rate limits, the free quota, the login
// guard and the security log all key on it.
//
// The zero Config trusts nobody. New builds a Resolver; its Addr reads a
// Fiber request, and Prefix gives the network (a /64 for IPv6) that rate
// limits key on.
package clientip

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

// The client-IP headers a trusted proxy may set. Each proxy product writes
// exactly one of them, and the operator names the one in front of this
// gateway; a header the operator did not name is never read.
const (
	// HeaderFlyClientIP is set by Fly.io's proxy to the address it accepted
	// the connection from.
	HeaderFlyClientIP = "Fly-Client-IP"
	// HeaderCFConnectingIP is set by Cloudflare to the visitor's address.
	HeaderCFConnectingIP = "CF-Connecting-IP"
	// HeaderXForwardedFor is the de-facto standard list every hop appends
	// its peer to; it is read from the right (see Resolver).
	HeaderXForwardedFor = "X-Forwarded-For"
)

// Config says whose word the gateway takes for a request's client
// address. The zero value trusts nobody: the address is the TCP peer's.
type Config struct {
	// TrustedProxies are the CIDRs (or single addresses) of the proxies in
	// front of the gateway (--trusted-proxies). Only a request whose TCP
	// peer is inside one of them has its Header believed.
	TrustedProxies []string
	// Header is the one header those proxies set (--client-ip-header):
	// "Fly-Client-IP", "CF-Connecting-IP" or "X-Forwarded-For", matched
	// without regard to case. Required when TrustedProxies is set.
	Header string
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if _, err := parseTrustedProxies(c.TrustedProxies); err != nil {
		errs = append(errs, err)
	}
	h, err := canonicalClientIPHeader(c.Header)
	if err != nil {
		errs = append(errs, err)
	}
	switch {
	case len(c.TrustedProxies) > 0 && h == "":
		errs = append(errs, errors.New("gateway: trusted proxies need a client IP header (Fly-Client-IP, CF-Connecting-IP or X-Forwarded-For)"))
	case len(c.TrustedProxies) == 0 && h != "":
		// A header nobody is trusted to set would silently never be read.
		errs = append(errs, fmt.Errorf("gateway: client IP header %s needs at least one trusted proxy", h))
	}
	return errors.Join(errs...)
}

func canonicalClientIPHeader(h string) (string, error) {
	for _, known := range []string{HeaderFlyClientIP, HeaderCFConnectingIP, HeaderXForwardedFor} {
		if strings.EqualFold(strings.TrimSpace(h), known) {
			return known, nil
		}
	}
	if strings.TrimSpace(h) == "" {
		return "", nil
	}
	return "", fmt.Errorf("gateway: client IP header %q: want Fly-Client-IP, CF-Connecting-IP or X-Forwarded-For", h)
}

// parseTrustedProxies parses CIDRs, accepting a bare address as a
// single-host prefix.
func parseTrustedProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for _, s := range list {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		errs = append(errs, fmt.Errorf("gateway: trusted proxy %q is not a CIDR or an IP address", s))
	}
	return out, errors.Join(errs...)
}

// Resolver finds the address a request comes from: the TCP peer,
// unless the peer is a trusted proxy, in which case the one configured
// header. A header from any other peer is ignored, because any client can
// write any header.
type Resolver struct {
	trusted []netip.Prefix
	header  string // canonical name; "" when no proxy is trusted
}

func New(cfg Config) (*Resolver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	trusted, _ := parseTrustedProxies(cfg.TrustedProxies)
	header, _ := canonicalClientIPHeader(cfg.Header)
	return &Resolver{trusted: trusted, header: header}, nil
}

// addr is the request's client address, never zoned, IPv4-mapped IPv6
// folded to IPv4.
func (r *Resolver) Addr(c *fiber.Ctx) netip.Addr { return r.AddrOf(c.Context()) }

// AddrOf is Addr for a request not (yet) in a fiber.Ctx.
func (r *Resolver) AddrOf(ctx *fasthttp.RequestCtx) netip.Addr {
	peer, _ := netip.AddrFromSlice(ctx.RemoteIP())
	if r.header == "" {
		return peer.Unmap()
	}
	return r.resolve(peer, ctx.Request.Header.PeekAll(r.header))
}

// resolve applies the trust rules to a peer address and every value of
// the configured header, in the order received.
func (r *Resolver) resolve(peer netip.Addr, values [][]byte) netip.Addr {
	peer = peer.Unmap()
	if !r.IsTrusted(peer) || len(values) == 0 {
		return peer
	}
	if r.header != HeaderXForwardedFor {
		// A single-address header: two copies, or a list, mean someone
		// other than our proxy wrote it.
		if len(values) != 1 {
			return peer
		}
		a, ok := parseForwardedAddr(values[0])
		if !ok {
			return peer
		}
		return a
	}
	// X-Forwarded-For: each hop appends the address it accepted the
	// connection from, so the right end was written by our proxies and the
	// left end by whoever the client is. Walk from the right past our own
	// proxies; the first address that is not one of them is the client.
	// Anything further left is the client's to forge and is never parsed.
	var last netip.Addr
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for {
			j := bytes.LastIndexByte(v, ',')
			a, ok := parseForwardedAddr(v[j+1:])
			if !ok {
				return peer
			}
			if !r.IsTrusted(a) {
				return a
			}
			last = a
			if j < 0 {
				break
			}
			v = v[:j]
		}
	}
	// Every hop is one of our proxies: the request came from inside.
	return last
}

func (r *Resolver) IsTrusted(a netip.Addr) bool {
	for _, p := range r.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseForwardedAddr parses one address as proxies write it: bare, or with
// a port ("1.2.3.4:80", "[2001:db8::1]:443"), or bracketed. Zoned
// addresses are refused: no Internet client has one.
func parseForwardedAddr(b []byte) (netip.Addr, bool) {
	s := strings.Trim(string(b), " \t")
	if s == "" {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, perr := netip.ParseAddrPort(s)
		if perr != nil {
			if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' {
				return netip.Addr{}, false
			}
			if a, err = netip.ParseAddr(s[1 : len(s)-1]); err != nil || !a.Is6() {
				return netip.Addr{}, false
			}
		} else {
			a = ap.Addr()
		}
	}
	if a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// Prefix is the block a client address is limited by: an IPv4
// address alone, an IPv6 address with its /64, the smallest block an ISP
// assigns one subscriber (RFC 6177), so rotating through a subscriber's
// 2^64 addresses does not reset the limits.
func Prefix(a netip.Addr) netip.Prefix {
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

// WidePrefix is the wider block a's holder most likely controls: the /24
// of an IPv4 address, the /48 of an IPv6 one (a site's usual assignment).
// Limits per Prefix are multiplied by every Prefix inside it, so the
// anonymous quota also counts per WidePrefix.
func WidePrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap().WithZone("")
	if a.Is4() {
		p, _ := a.Prefix(24)
		return p
	}
	p, _ := a.Prefix(48)
	return p
}
