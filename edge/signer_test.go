package edge

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The vector below was computed independently of this package, with
// OpenSSL 3.0 in a shell:
//
//	KEY='0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0'
//	HASH=$(printf '%s' 'imagegate test vector' | sha256sum | cut -d' ' -f1)
//	# f35078415e97ca521f0bb4f9b08d2f2cd9bcaf68a7606a41fcecf9d83885daea
//	printf '%s' "/o/${HASH}.png1700000000" | openssl dgst -sha256 -hmac "$KEY" -binary \
//	    | base64 | tr '+/' '-_' | tr -d '='
//	# hFeuatkvLmH7-qvC72QKkNmQ29-CuGYyPCM4n_59e9w
//
//	KEY2='previous-key-previous-key-previous-key!!'
//	printf '%s' "/o/${HASH}.png1700000000" | openssl dgst -sha256 -hmac "$KEY2" -binary \
//	    | base64 | tr '+/' '-_' | tr -d '='
//	# MNLF9yjR-Ml1WNNaL6QefYqk_3KmJ4owdl9Hc1-fABQ
//
// That is what Cloudflare's is_timed_hmac_valid_v0 with flag "s" computes:
// HMAC-SHA256 over the message (the path) followed by the decimal issue
// time, URL-safe base64 without padding.
const (
	vectorKey     = "0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0"
	vectorPrevKey = "previous-key-previous-key-previous-key!!"
	vectorPath    = "/o/" + testHash + ".png"
	vectorIssued  = 1700000000
	vectorToken   = "1700000000-hFeuatkvLmH7-qvC72QKkNmQ29-CuGYyPCM4n_59e9w"
	vectorPrevTok = "1700000000-MNLF9yjR-Ml1WNNaL6QefYqk_3KmJ4owdl9Hc1-fABQ"
	otherKey      = "an-unrelated-key-that-nobody-configured-anywhere"
)

func at(unix int64) func() time.Time {
	return func() time.Time { return time.Unix(unix, 0) }
}

func mustSigner(t testing.TB, cfg SignerConfig, now func() time.Time) *Signer {
	t.Helper()
	s, err := NewSigner(cfg, now)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSignMatchesIndependentVector(t *testing.T) {
	t.Parallel()
	s := mustSigner(t, SignerConfig{Current: []byte(vectorKey), Previous: []byte(vectorPrevKey)}, at(vectorIssued))
	if got, want := s.Sign(vectorPath), vectorPath+"?verify="+vectorToken; got != want {
		t.Fatalf("Sign = %q\n want %q", got, want)
	}
	if got, want := string(s.AppendSign([]byte("https://cdn.example"), []byte(vectorPath))), "https://cdn.example"+vectorPath+"?verify="+vectorToken; got != want {
		t.Fatalf("AppendSign = %q\n want %q", got, want)
	}
	if err := s.Verify(vectorPath, "verify="+vectorToken); err != nil {
		t.Errorf("Verify(current key vector) = %v", err)
	}
	if err := s.Verify(vectorPath, "verify="+vectorPrevTok); err != nil {
		t.Errorf("Verify(previous key vector) = %v", err)
	}
}

// verifyCases run against a signer with current key vectorKey, previous key
// vectorPrevKey and the default TTL and parameter.
var verifyCases = []struct {
	name     string
	path     string
	rawQuery string
	now      int64
	want     error
}{
	{"current key", vectorPath, "verify=" + vectorToken, vectorIssued, nil},
	{"previous key", vectorPath, "verify=" + vectorPrevTok, vectorIssued, nil},
	{"last valid second", vectorPath, "verify=" + vectorToken, vectorIssued + 86400, nil},
	{"expired", vectorPath, "verify=" + vectorToken, vectorIssued + 86401, ErrSignatureExpired},
	{"expired previous key", vectorPath, "verify=" + vectorPrevTok, vectorIssued + 86401, ErrSignatureExpired},
	{"issued within clock skew", vectorPath, "verify=" + vectorToken, vectorIssued - 60, nil},
	{"issued in the future", vectorPath, "verify=" + vectorToken, vectorIssued - 61, ErrSignatureInvalid},
	{"unknown key", vectorPath, "verify=" + signWith(otherKey, vectorPath, vectorIssued), vectorIssued, ErrSignatureInvalid},
	{"other path", "/o/" + testHash + ".gif", "verify=" + vectorToken, vectorIssued, ErrSignatureInvalid},
	{"path with query", vectorPath + "?x=1", "verify=" + vectorToken, vectorIssued, ErrSignatureInvalid},
	{"tampered digit", vectorPath, "verify=1700000001" + vectorToken[10:], vectorIssued, ErrSignatureInvalid},
	{"tampered MAC", vectorPath, "verify=" + vectorToken[:20] + "A" + vectorToken[21:], vectorIssued, ErrSignatureInvalid},
	{"non-canonical last base64 digit", vectorPath, "verify=" + nonCanonical(vectorToken), vectorIssued, ErrSignatureInvalid},
	{"standard base64 alphabet", vectorPath, "verify=" + strings.NewReplacer("-", "+", "_", "/").Replace(vectorToken[11:]), vectorIssued, ErrSignatureInvalid},
	{"padded", vectorPath, "verify=" + vectorToken + "=", vectorIssued, ErrSignatureInvalid},
	{"percent-encoded", vectorPath, "verify=1700000000%2D" + vectorToken[11:], vectorIssued, ErrSignatureInvalid},
	{"percent-encoded MAC byte", vectorPath, "verify=" + strings.Replace(vectorToken, "_", "%5F", 1), vectorIssued, ErrSignatureInvalid},
	{"nine digits", vectorPath, "verify=" + vectorToken[1:], vectorIssued, ErrSignatureInvalid},
	{"eleven digits", vectorPath, "verify=0" + vectorToken, vectorIssued, ErrSignatureInvalid},
	{"sign instead of dash", vectorPath, "verify=1700000000+" + vectorToken[11:], vectorIssued, ErrSignatureInvalid},
	{"no dash", vectorPath, "verify=1700000000" + vectorToken[11:] + "A", vectorIssued, ErrSignatureInvalid},
	{"truncated MAC", vectorPath, "verify=" + vectorToken[:len(vectorToken)-1], vectorIssued, ErrSignatureInvalid},
	{"MAC with newline", vectorPath, "verify=" + vectorToken[:30] + "\n" + vectorToken[31:], vectorIssued, ErrSignatureInvalid},
	{"empty token", vectorPath, "verify=", vectorIssued, ErrSignatureInvalid},
	{"parameter without value", vectorPath, "verify", vectorIssued, ErrSignatureInvalid},
	{"token not last", vectorPath, "verify=" + vectorToken + "&x=1", vectorIssued, ErrSignatureInvalid},
	{"extra parameter before", vectorPath, "x=1&verify=" + vectorToken, vectorIssued, ErrSignatureInvalid},
	{"token twice", vectorPath, "verify=" + vectorToken + "&verify=" + vectorToken, vectorIssued, ErrSignatureInvalid},
	{"trailing ampersand", vectorPath, "verify=" + vectorToken + "&", vectorIssued, ErrSignatureInvalid},
	{"semicolon", vectorPath, "verify=" + vectorToken + ";x=1", vectorIssued, ErrSignatureInvalid},
	{"no query", vectorPath, "", vectorIssued, ErrSignatureMissing},
	{"other parameters only", vectorPath, "x=1&y=2", vectorIssued, ErrSignatureMissing},
	{"parameter name in other case", vectorPath, "VERIFY=" + vectorToken, vectorIssued, ErrSignatureMissing},
	{"parameter name escaped", vectorPath, "%76erify=" + vectorToken, vectorIssued, ErrSignatureMissing},
}

// signWith computes a token with an arbitrary key, for cases that need a
// well-formed token the signer under test must not accept.
func signWith(key, path string, unix int64) string {
	s, err := NewSigner(SignerConfig{Current: []byte(key)}, at(unix))
	if err != nil {
		panic(err)
	}
	link := s.Sign(path)
	return link[strings.LastIndex(link, "=")+1:]
}

// nonCanonical respells token's last base64 digit with nonzero unused low
// bits: a lax decoder yields the same MAC bytes, a strict one refuses.
func nonCanonical(token string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, token[len(token)-1])
	if i&3 != 0 {
		panic("last digit of a 32-byte MAC must have two zero low bits")
	}
	return token[:len(token)-1] + alphabet[i+1:i+2]
}

func TestVerify(t *testing.T) {
	t.Parallel()
	for _, tc := range verifyCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := mustSigner(t, SignerConfig{Current: []byte(vectorKey), Previous: []byte(vectorPrevKey)}, at(tc.now))
			err := s.Verify(tc.path, tc.rawQuery)
			if !errors.Is(err, tc.want) {
				t.Errorf("Verify(%q, %q) = %v, want %v", tc.path, tc.rawQuery, err, tc.want)
			}
		})
	}
}

// A link signed before a rotation still works after it while the old key
// is configured as Previous, and stops working once it is dropped; links
// signed after it use the new key only.
func TestRotation(t *testing.T) {
	t.Parallel()
	now := at(vectorIssued)
	before := mustSigner(t, SignerConfig{Current: []byte(vectorPrevKey)}, now)
	during := mustSigner(t, SignerConfig{Current: []byte(vectorKey), Previous: []byte(vectorPrevKey)}, now)
	after := mustSigner(t, SignerConfig{Current: []byte(vectorKey)}, now)

	old := strings.TrimPrefix(before.Sign(vectorPath), vectorPath+"?")
	if old != "verify="+vectorPrevTok {
		t.Fatalf("old signer produced %q, want the independent vector %q", old, vectorPrevTok)
	}
	if err := during.Verify(vectorPath, old); err != nil {
		t.Errorf("old link during rotation: %v", err)
	}
	if err := after.Verify(vectorPath, old); !errors.Is(err, ErrSignatureInvalid) {
		t.Errorf("old link after rotation = %v, want ErrSignatureInvalid", err)
	}
	fresh := strings.TrimPrefix(during.Sign(vectorPath), vectorPath+"?")
	if fresh != "verify="+vectorToken {
		t.Errorf("rotating signer signed with %q, want the current key's %q", fresh, vectorToken)
	}
	if err := before.Verify(vectorPath, fresh); !errors.Is(err, ErrSignatureInvalid) {
		t.Errorf("old signer accepted a new-key link: %v", err)
	}
}

func TestSignerDefaultsAndParam(t *testing.T) {
	t.Parallel()
	key := []byte(vectorKey)
	s := mustSigner(t, SignerConfig{Current: key}, at(vectorIssued))
	link := s.Sign(vectorPath)
	if !strings.HasPrefix(link, vectorPath+"?verify=") {
		t.Fatalf("default parameter: link %q", link)
	}
	// The signer keeps its own copy of the key.
	key[0] ^= 0xff
	q := strings.TrimPrefix(link, vectorPath+"?")
	for _, tc := range []struct {
		now  int64
		want error
	}{
		{vectorIssued + int64(DefaultLinkTTL/time.Second), nil},
		{vectorIssued + int64(DefaultLinkTTL/time.Second) + 1, ErrSignatureExpired},
	} {
		err := mustSigner(t, SignerConfig{Current: []byte(vectorKey)}, at(tc.now)).Verify(vectorPath, q)
		if !errors.Is(err, tc.want) {
			t.Errorf("default TTL, now=issued+%d: Verify = %v, want %v", tc.now-vectorIssued, err, tc.want)
		}
	}
	if err := s.Verify(vectorPath, q); err != nil {
		t.Errorf("Verify after the caller changed its key slice: %v", err)
	}

	short := mustSigner(t, SignerConfig{Current: []byte(vectorKey), TTL: 90 * time.Second, Param: "sig"}, at(vectorIssued))
	link = short.Sign(vectorPath)
	if want := vectorPath + "?sig=" + vectorToken; link != want {
		t.Fatalf("custom parameter: Sign = %q, want %q", link, want)
	}
	for _, tc := range []struct {
		rawQuery string
		now      int64
		want     error
	}{
		{"sig=" + vectorToken, vectorIssued + 90, nil},
		{"sig=" + vectorToken, vectorIssued + 91, ErrSignatureExpired},
		{"verify=" + vectorToken, vectorIssued, ErrSignatureMissing},
		{"signature=" + vectorToken, vectorIssued, ErrSignatureMissing},
		{"x=1&sig=" + vectorToken, vectorIssued, ErrSignatureInvalid},
	} {
		s := mustSigner(t, SignerConfig{Current: []byte(vectorKey), TTL: 90 * time.Second, Param: "sig"}, at(tc.now))
		if err := s.Verify(vectorPath, tc.rawQuery); !errors.Is(err, tc.want) {
			t.Errorf("Param sig: Verify(%q) at issued+%d = %v, want %v", tc.rawQuery, tc.now-vectorIssued, err, tc.want)
		}
	}
}

func TestNewSignerRejectsBadConfig(t *testing.T) {
	t.Parallel()
	key := []byte(vectorKey)
	for _, tc := range []struct {
		name string
		cfg  SignerConfig
	}{
		{"no key", SignerConfig{}},
		{"short current key", SignerConfig{Current: key[:31]}},
		{"short previous key", SignerConfig{Current: key, Previous: key[:31]}},
		{"negative TTL", SignerConfig{Current: key, TTL: -time.Second}},
		{"parameter needs escaping", SignerConfig{Current: key, Param: "v&x"}},
		{"parameter with equals", SignerConfig{Current: key, Param: "v="}},
	} {
		if _, err := NewSigner(tc.cfg, nil); err == nil {
			t.Errorf("%s: NewSigner succeeded", tc.name)
		}
	}
	// Every problem is reported at once.
	err := SignerConfig{Current: key[:1], Previous: key[:1], TTL: -1, Param: "?"}.Validate()
	if n := len(strings.Split(err.Error(), "\n")); n != 4 {
		t.Errorf("Validate reported %d problems, want 4: %v", n, err)
	}
	if _, err := NewSigner(SignerConfig{Current: key[:32], Previous: key[32:64]}, nil); err != nil {
		t.Errorf("32-byte keys: %v", err)
	}
}

func TestSignerConcurrentUse(t *testing.T) {
	t.Parallel()
	s := mustSigner(t, SignerConfig{Current: []byte(vectorKey), Previous: []byte(vectorPrevKey)}, at(vectorIssued))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 200 {
				path := "/o/" + HashHex([]byte(strconv.Itoa(i*1000+j))) + ".png"
				link := s.Sign(path)
				if err := s.Verify(path, link[len(path)+1:]); err != nil {
					t.Errorf("Verify(Sign(%s)) = %v", path, err)
					return
				}
				if err := s.Verify(path, "verify="+vectorToken); !errors.Is(err, ErrSignatureInvalid) {
					t.Errorf("Verify(other path's token) = %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// FuzzVerify checks that Verify never panics, reports only its three
// sentinels, and accepts nothing but links Sign makes: whenever Verify
// says yes, a signer with the same keys, clocked at the token's issue
// time, must produce exactly that link. It also checks that whatever path
// Sign is given, Verify accepts the result.
func FuzzVerify(f *testing.F) {
	for _, tc := range verifyCases {
		f.Add(tc.path, tc.rawQuery)
	}
	f.Add("", "verify="+signWith(vectorKey, "", vectorIssued))
	f.Add("/o/a b?c#d", "verify="+signWith(vectorKey, "/o/a b?c#d", vectorIssued))

	const now = vectorIssued + 3600
	s := mustSigner(f, SignerConfig{Current: []byte(vectorKey), Previous: []byte(vectorPrevKey)}, at(now))
	f.Fuzz(func(t *testing.T, path, rawQuery string) {
		err := s.Verify(path, rawQuery)
		switch {
		case err == nil:
			tok := strings.TrimPrefix(rawQuery, "verify=")
			issued, perr := strconv.ParseInt(tok[:issuedLen], 10, 64)
			if perr != nil {
				t.Fatalf("accepted %q with issue time %q", rawQuery, tok[:issuedLen])
			}
			if rawQuery != "verify="+signWith(vectorKey, path, issued) && rawQuery != "verify="+signWith(vectorPrevKey, path, issued) {
				t.Fatalf("Verify(%q, %q) accepted a link Sign does not make", path, rawQuery)
			}
		case errors.Is(err, ErrSignatureMissing), errors.Is(err, ErrSignatureInvalid), errors.Is(err, ErrSignatureExpired):
		default:
			t.Fatalf("Verify(%q, %q) = %v, not one of the sentinels", path, rawQuery, err)
		}

		link := s.Sign(path)
		if !strings.HasPrefix(link, path+"?verify=") {
			t.Fatalf("Sign(%q) = %q", path, link)
		}
		if err := s.Verify(path, link[len(path)+1:]); err != nil {
			t.Fatalf("Verify(Sign(%q)) = %v", path, err)
		}
	})
}

func BenchmarkSign(b *testing.B) {
	s := mustSigner(b, SignerConfig{Current: []byte(vectorKey)}, time.Now)
	b.ReportAllocs()
	for b.Loop() {
		_ = s.Sign(vectorPath)
	}
}

func BenchmarkVerify(b *testing.B) {
	for _, bc := range []struct {
		name, key string
		want      error
	}{
		{"current", vectorKey, nil},
		{"previous", vectorPrevKey, nil},
		{"forged", otherKey, ErrSignatureInvalid},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := mustSigner(b, SignerConfig{Current: []byte(vectorKey), Previous: []byte(vectorPrevKey)}, at(vectorIssued))
			q := "verify=" + signWith(bc.key, vectorPath, vectorIssued)
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Verify(vectorPath, q); !errors.Is(err, bc.want) {
					b.Fatal(err)
				}
			}
		})
	}
}

// A link whose MAC was verified is remembered, but only its MAC: the same
// token expires on time, a token for another path or one byte changed is
// refused, and so is the genuine token after a clock that goes too far
// back (issued in the future).
func TestVerifyRemembersTheMACOnly(t *testing.T) {
	t.Parallel()
	var clock int64 = vectorIssued + 10
	s := mustSigner(t, SignerConfig{Current: []byte(vectorKey)}, func() time.Time { return time.Unix(clock, 0) })
	for range 3 {
		if err := s.Verify(vectorPath, "verify="+vectorToken); err != nil {
			t.Fatalf("genuine link: %v", err)
		}
	}
	if _, known := s.knownGenuine(vectorPath, vectorToken); !known {
		t.Fatal("a verified link is not remembered: every hit pays for the HMAC")
	}
	other := "/o/" + strings.Repeat("0", 64) + ".png"
	if err := s.Verify(other, "verify="+vectorToken); !errors.Is(err, ErrSignatureInvalid) {
		t.Errorf("a remembered token on another path: %v, want ErrSignatureInvalid", err)
	}
	tampered := vectorToken[:len(vectorToken)-1] + "x"
	if err := s.Verify(vectorPath, "verify="+tampered); !errors.Is(err, ErrSignatureInvalid) {
		t.Errorf("a remembered token changed in its last byte: %v, want ErrSignatureInvalid", err)
	}
	clock = vectorIssued + int64(DefaultLinkTTL/time.Second) + 1
	if err := s.Verify(vectorPath, "verify="+vectorToken); !errors.Is(err, ErrSignatureExpired) {
		t.Errorf("a remembered token past its TTL: %v, want ErrSignatureExpired", err)
	}
	clock = vectorIssued - int64(MaxClockSkew/time.Second) - 1
	if err := s.Verify(vectorPath, "verify="+vectorToken); !errors.Is(err, ErrSignatureInvalid) {
		t.Errorf("a remembered token issued in the future: %v, want ErrSignatureInvalid", err)
	}
}
