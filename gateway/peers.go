package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// PeersConfig names the other gateways of a deployment, which a purge must
// reach so that no node keeps answering from its own L1/L2.
type PeersConfig struct {
	// Peers are base URLs ("http://10.0.0.2:8080") or DNS names
	// ("imagegate.internal", Fly's name for every machine of an app)
	// resolved at each purge to all their addresses, reached on Port.
	Peers []string
	// Port is the port of peers named by DNS (8080).
	Port int
	// Timeout bounds one peer's invalidation (10 s).
	Timeout time.Duration
}

func (c *PeersConfig) setDefaults() {
	if c.Port == 0 {
		c.Port = 8080
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
}

func (c *PeersConfig) validate() error {
	for _, p := range c.Peers {
		if strings.Contains(p, "://") {
			u, err := url.Parse(p)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
				return fmt.Errorf("gateway: peer %q must be scheme://host:port or a DNS name", p)
			}
			continue
		}
		if p == "" || strings.ContainsAny(p, "/:@ ") {
			return fmt.Errorf("gateway: peer %q must be scheme://host:port or a DNS name", p)
		}
	}
	if c.Port < 1 || c.Port > 65535 {
		return fmt.Errorf("gateway: peer port %d out of range", c.Port)
	}
	return nil
}

// peerSet reaches the other gateways with the peer token (derived from the
// admin token), the credential peers require before they drop anything.
type peerSet struct {
	cfg      PeersConfig
	token    string
	client   *http.Client
	resolver *net.Resolver
	// local reports whether an address is this machine's own, so a DNS
	// name that includes this node does not make it call itself.
	local func(net.IP) bool
}

func newPeerSet(cfg PeersConfig, token string, client *http.Client) *peerSet {
	return &peerSet{cfg: cfg, token: token, client: client, resolver: net.DefaultResolver, local: isLocalIP}
}

// list returns the base URL of every peer now.
func (p *peerSet) list(ctx context.Context) []string {
	var out []string
	for _, peer := range p.cfg.Peers {
		if strings.Contains(peer, "://") {
			out = append(out, strings.TrimSuffix(peer, "/"))
			continue
		}
		addrs, err := p.resolver.LookupIPAddr(ctx, peer)
		if err != nil {
			out = append(out, "dns:"+peer) // reported as a failed node
			continue
		}
		for _, a := range addrs {
			if p.local(a.IP) {
				continue
			}
			out = append(out, "http://"+net.JoinHostPort(a.IP.String(), strconv.Itoa(p.cfg.Port)))
		}
	}
	return out
}

// invalidate asks every peer to drop what req names, concurrently, and
// reports each peer's answer.
func (p *peerSet) invalidate(ctx context.Context, req purgeJSON) []nodeResult {
	req.DryRun = false
	body, _ := json.Marshal(req)
	peers := p.list(ctx)
	out := make([]nodeResult, len(peers))
	var wg sync.WaitGroup
	for i, base := range peers {
		wg.Go(func() {
			out[i] = p.one(ctx, base, body)
		})
	}
	wg.Wait()
	return out
}

func (p *peerSet) one(ctx context.Context, base string, body []byte) nodeResult {
	res := nodeResult{Node: base}
	if name, ok := strings.CutPrefix(base, "dns:"); ok {
		res.Error = "could not resolve " + name
		return res
	}
	// One retry: a peer restarting (deploys roll one machine at a time)
	// refuses connections for a moment.
	var last error
	for attempt := 0; attempt < 2; attempt++ {
		n, err := p.post(ctx, base, body)
		if err == nil {
			res.OK, res.Entries = true, n
			return res
		}
		last = err
	}
	res.Error = last.Error()
	return res
}

func (p *peerSet) post(ctx context.Context, base string, body []byte) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/admin/invalidate", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("peer answered %d: %s", resp.StatusCode, bytes.TrimSpace(raw))
	}
	var r nodeResult
	if err := json.Unmarshal(raw, &r); err != nil {
		return 0, fmt.Errorf("peer answer: %w", err)
	}
	return r.Entries, nil
}

// isLocalIP reports whether ip belongs to one of this machine's interfaces.
func isLocalIP(ip net.IP) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}
