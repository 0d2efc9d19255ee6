package clientip

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/internal/testpeer"
)

func TestClientIPConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     Config
		wantErr []string
	}{
		{name: "zero value trusts nobody", cfg: Config{}},
		{name: "Fly", cfg: Config{TrustedProxies: []string{"fdaa::/16", "172.16.0.0/12"}, Header: "Fly-Client-IP"}},
		{name: "header name in any case, bare address", cfg: Config{TrustedProxies: []string{" 10.0.0.1 "}, Header: "x-forwarded-for"}},
		{
			name:    "bad CIDRs and header, all reported",
			cfg:     Config{TrustedProxies: []string{"10.0.0.0/33", "proxy.internal", "fe80::1%eth0"}, Header: "X-Real-IP"},
			wantErr: []string{`"10.0.0.0/33" is not a CIDR`, `"proxy.internal" is not a CIDR`, `"fe80::1%eth0" is not a CIDR`, `client IP header "X-Real-IP"`},
		},
		{name: "proxies without a header", cfg: Config{TrustedProxies: []string{"10.0.0.0/8"}}, wantErr: []string{"trusted proxies need a client IP header"}},
		{name: "header without proxies", cfg: Config{Header: "CF-Connecting-IP"}, wantErr: []string{"CF-Connecting-IP needs at least one trusted proxy"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			testpeer.CheckValidation(t, tt.cfg.Validate(), tt.wantErr)
		})
	}
}

// clientIPResolveCases are the resolution rules, also the fuzz seeds.
var clientIPResolveCases = []struct {
	name   string
	header string // configured header
	peer   string
	values []string
	want   string
}{
	{"untrusted peer, forged Fly header", HeaderFlyClientIP, "203.0.113.5", []string{"1.2.3.4"}, "203.0.113.5"},
	{"untrusted peer, forged XFF", HeaderXForwardedFor, "203.0.113.5", []string{"1.2.3.4"}, "203.0.113.5"},
	{"trusted peer, no header", HeaderFlyClientIP, "10.0.0.2", nil, "10.0.0.2"},
	{"trusted peer, Fly header", HeaderFlyClientIP, "10.0.0.2", []string{" 198.51.100.7 "}, "198.51.100.7"},
	{"trusted peer, CF header IPv6", HeaderCFConnectingIP, "10.0.0.2", []string{"2001:db8::7"}, "2001:db8::7"},
	{"IPv4-mapped header value folds to IPv4", HeaderCFConnectingIP, "10.0.0.2", []string{"::ffff:198.51.100.7"}, "198.51.100.7"},
	{"IPv4-mapped peer folds to IPv4", HeaderFlyClientIP, "::ffff:10.0.0.2", []string{"198.51.100.7"}, "198.51.100.7"},
	{"two Fly headers", HeaderFlyClientIP, "10.0.0.2", []string{"198.51.100.7", "1.2.3.4"}, "10.0.0.2"},
	{"list in a single-address header", HeaderCFConnectingIP, "10.0.0.2", []string{"198.51.100.7, 1.2.3.4"}, "10.0.0.2"},
	{"malformed single-address header", HeaderFlyClientIP, "10.0.0.2", []string{"not-an-ip"}, "10.0.0.2"},
	{"zoned address", HeaderFlyClientIP, "10.0.0.2", []string{"fe80::1%eth0"}, "10.0.0.2"},
	{"empty header", HeaderFlyClientIP, "10.0.0.2", []string{""}, "10.0.0.2"},
	{"XFF: client then our proxy", HeaderXForwardedFor, "10.0.0.2", []string{"198.51.100.7, 10.0.0.9"}, "198.51.100.7"},
	{"XFF: forged prefix ignored", HeaderXForwardedFor, "10.0.0.2", []string{"1.2.3.4, 5.6.7.8, 198.51.100.7, 10.0.0.9"}, "198.51.100.7"},
	{"XFF: garbage left of the client never parsed", HeaderXForwardedFor, "10.0.0.2", []string{"<script>, 198.51.100.7"}, "198.51.100.7"},
	{"XFF: garbage among our proxies", HeaderXForwardedFor, "10.0.0.2", []string{"198.51.100.7, junk, 10.0.0.9"}, "10.0.0.2"},
	{"XFF: empty element among our proxies", HeaderXForwardedFor, "10.0.0.2", []string{"198.51.100.7,,10.0.0.9"}, "10.0.0.2"},
	{"XFF: several header lines read in order", HeaderXForwardedFor, "10.0.0.2", []string{"1.2.3.4, 198.51.100.7", "10.0.0.8", "10.0.0.9"}, "198.51.100.7"},
	{"XFF: ports and brackets", HeaderXForwardedFor, "10.0.0.2", []string{"[2001:db8::7]:443, 10.0.0.9:8080"}, "2001:db8::7"},
	{"XFF: bracketed IPv6", HeaderXForwardedFor, "10.0.0.2", []string{"[2001:db8::8]"}, "2001:db8::8"},
	{"XFF: bracketed IPv4 is malformed", HeaderXForwardedFor, "10.0.0.2", []string{"[198.51.100.7]"}, "10.0.0.2"},
	{"XFF: every hop ours", HeaderXForwardedFor, "10.0.0.2", []string{"10.0.0.7, 10.0.0.9"}, "10.0.0.7"},
	{"XFF: tabs are whitespace", HeaderXForwardedFor, "10.0.0.2", []string{"198.51.100.7,\t10.0.0.9"}, "198.51.100.7"},
}

func TestClientIPResolve(t *testing.T) {
	t.Parallel()
	for _, tt := range clientIPResolveCases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := New(Config{TrustedProxies: []string{"10.0.0.0/8"}, Header: tt.header})
			if err != nil {
				t.Fatal(err)
			}
			var values [][]byte
			for _, v := range tt.values {
				values = append(values, []byte(v))
			}
			got := r.resolve(netip.MustParseAddr(tt.peer), values)
			if diff := cmp.Diff(tt.want, got.String()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestClientIPOverRealSocket resolves addresses in a Fiber app on a real
// loopback listener, so the peer is the socket's: 127.0.0.1.
func TestClientIPOverRealSocket(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		cfg    Config
		header map[string]string
		want   string
	}{
		{"no proxies: the socket", Config{}, map[string]string{"X-Forwarded-For": "1.2.3.4", "Fly-Client-IP": "1.2.3.4", "CF-Connecting-IP": "1.2.3.4"}, "127.0.0.1"},
		{"loopback not trusted", Config{TrustedProxies: []string{"10.0.0.0/8"}, Header: HeaderFlyClientIP}, map[string]string{"Fly-Client-IP": "1.2.3.4"}, "127.0.0.1"},
		{"loopback trusted, Fly", Config{TrustedProxies: []string{"127.0.0.1/32"}, Header: HeaderFlyClientIP}, map[string]string{"Fly-Client-IP": "2001:db8::9", "X-Forwarded-For": "1.2.3.4"}, "2001:db8::9"},
		{"loopback trusted, unconfigured header ignored", Config{TrustedProxies: []string{"127.0.0.1/32"}, Header: HeaderCFConnectingIP}, map[string]string{"Fly-Client-IP": "1.2.3.4"}, "127.0.0.1"},
		{"loopback trusted, XFF", Config{TrustedProxies: []string{"127.0.0.0/8"}, Header: HeaderXForwardedFor}, map[string]string{"X-Forwarded-For": "1.2.3.4, 198.51.100.3, 127.0.0.5"}, "198.51.100.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			app := fiber.New(fiber.Config{DisableStartupMessage: true})
			app.Get("/ip", func(c *fiber.Ctx) error { return c.SendString(r.Addr(c).String()) })
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go app.Listener(ln)
			t.Cleanup(func() { app.Shutdown() })
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+ln.Addr().String()+"/ip", nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if diff := cmp.Diff(tt.want, string(body)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestClientIPPrefix(t *testing.T) {
	t.Parallel()
	tests := []struct{ addr, want string }{
		{"198.51.100.7", "198.51.100.7/32"},
		{"::ffff:198.51.100.7", "198.51.100.7/32"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", "2001:db8:1:3::/64"},
		{"fe80::1%eth0", "fe80::/64"},
	}
	for _, tt := range tests {
		if got := Prefix(netip.MustParseAddr(tt.addr)).String(); got != tt.want {
			t.Errorf("Prefix(%s) = %s, want %s", tt.addr, got, tt.want)
		}
	}
}

// FuzzClientIPHeader feeds arbitrary header values to every header kind,
// from trusted and untrusted peers.
func FuzzClientIPHeader(f *testing.F) {
	headers := []string{HeaderFlyClientIP, HeaderCFConnectingIP, HeaderXForwardedFor}
	for _, tc := range clientIPResolveCases {
		for i, h := range headers {
			if h == tc.header {
				f.Add(uint8(i), true, []byte(strings.Join(tc.values, "\n")))
				f.Add(uint8(i), false, []byte(strings.Join(tc.values, "\n")))
			}
		}
	}
	trustedPeer := netip.MustParseAddr("10.0.0.2")
	untrustedPeer := netip.MustParseAddr("203.0.113.5")
	f.Fuzz(func(t *testing.T, which uint8, trusted bool, raw []byte) {
		header := headers[int(which)%len(headers)]
		r, err := New(Config{TrustedProxies: []string{"10.0.0.0/8"}, Header: header})
		if err != nil {
			t.Fatal(err)
		}
		values := bytes.Split(raw, []byte("\n"))
		peer := untrustedPeer
		if trusted {
			peer = trustedPeer
		}
		got := r.resolve(peer, values)
		if !got.IsValid() || got.Zone() != "" || got.Is4In6() {
			t.Fatalf("resolved %v: want a plain valid address", got)
		}
		if !trusted {
			if got != peer {
				t.Fatalf("untrusted peer: resolved %v from header %q", got, raw)
			}
			return
		}
		if got == peer {
			return
		}
		// Anything else must be an address written in the header.
		for _, v := range values {
			for _, part := range bytes.Split(v, []byte(",")) {
				if a, ok := parseForwardedAddr(part); ok && a == got {
					return
				}
			}
		}
		t.Fatalf("resolved %v, which is not in header %q", got, raw)
	})
}
