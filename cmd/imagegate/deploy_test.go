package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/inference"
	"github.com/imagegate/imagegate/inference/retro"
	"github.com/imagegate/imagegate/internal/testpeer"
)

// The deployment files live at the repository root.
const (
	flyTomlPath      = "../../fly.toml"
	dockerfilePath   = "../../Dockerfile"
	dockerignorePath = "../../.dockerignore"
	goModPath        = "../../go.mod"
)

// flyMaxKillTimeout is the longest kill_timeout Fly.io accepts.
const flyMaxKillTimeout = 300 * time.Second

// flyConfig mirrors the parts of Fly's app configuration (flyctl's
// internal/appconfig.Config, with the same key names) that an imagegate
// gateway uses. Keys it does not know are refused, so a misspelt key fails
// here instead of being ignored by flyctl. flyctl's own schema cannot be
// checked offline: its appconfig package is internal, and the published
// JSON schema (SchemaStore's fly.json) is community-made and lags flyctl
// (it still types auto_stop_machines as a boolean).
type flyConfig struct {
	App            string                     `toml:"app"`
	PrimaryRegion  string                     `toml:"primary_region"`
	KillSignal     string                     `toml:"kill_signal"`
	KillTimeout    *flyDuration               `toml:"kill_timeout"`
	SwapSizeMB     *int                       `toml:"swap_size_mb"`
	ConsoleCommand string                     `toml:"console_command"`
	Build          *flyBuild                  `toml:"build"`
	Deploy         *flyDeploy                 `toml:"deploy"`
	Env            map[string]string          `toml:"env"`
	Processes      map[string]string          `toml:"processes"`
	Mounts         []flyMount                 `toml:"mounts"`
	Files          []flyFile                  `toml:"files"`
	HTTPService    *flyHTTPService            `toml:"http_service"`
	Metrics        []flyMetrics               `toml:"metrics"`
	Checks         map[string]flyMachineCheck `toml:"checks"`
	VM             []flyVM                    `toml:"vm"`
}

// flyMachineCheck is a top-level [checks.<name>]: a machine check, which
// unlike [[http_service.checks]] needs no public service.
type flyMachineCheck struct {
	Type        string       `toml:"type"`
	Port        int          `toml:"port"`
	Method      string       `toml:"method"`
	Path        string       `toml:"path"`
	Protocol    string       `toml:"protocol"`
	GracePeriod *flyDuration `toml:"grace_period"`
	Interval    *flyDuration `toml:"interval"`
	Timeout     *flyDuration `toml:"timeout"`
	Processes   []string     `toml:"processes"`
}

type flyBuild struct {
	Builder     string            `toml:"builder"`
	Image       string            `toml:"image"`
	Dockerfile  string            `toml:"dockerfile"`
	Ignorefile  string            `toml:"ignorefile"`
	BuildTarget string            `toml:"build-target"`
	Args        map[string]string `toml:"args"`
}

type flyDeploy struct {
	Strategy       string       `toml:"strategy"`
	MaxUnavailable *float64     `toml:"max_unavailable"`
	WaitTimeout    *flyDuration `toml:"wait_timeout"`
}

type flyMount struct {
	Source                  string   `toml:"source"`
	Destination             string   `toml:"destination"`
	InitialSize             string   `toml:"initial_size"`
	SnapshotRetention       *int     `toml:"snapshot_retention"`
	ScheduledSnapshots      *bool    `toml:"scheduled_snapshots"`
	AutoExtendSizeThreshold int      `toml:"auto_extend_size_threshold"`
	AutoExtendSizeIncrement string   `toml:"auto_extend_size_increment"`
	AutoExtendSizeLimit     string   `toml:"auto_extend_size_limit"`
	Processes               []string `toml:"processes"`
}

// flyFile is a file Fly writes into the machine before it starts, such as
// the CA certificate of a private inference tier.
type flyFile struct {
	GuestPath  string   `toml:"guest_path"`
	LocalPath  string   `toml:"local_path"`
	SecretName string   `toml:"secret_name"`
	RawValue   string   `toml:"raw_value"`
	Processes  []string `toml:"processes"`
}

type flyHTTPService struct {
	InternalPort       int             `toml:"internal_port"`
	ForceHTTPS         bool            `toml:"force_https"`
	AutoStopMachines   *flyAutostop    `toml:"auto_stop_machines"`
	AutoStartMachines  *bool           `toml:"auto_start_machines"`
	MinMachinesRunning *int            `toml:"min_machines_running"`
	Processes          []string        `toml:"processes"`
	Concurrency        *flyConcurrency `toml:"concurrency"`
	Checks             []flyHTTPCheck  `toml:"checks"`
}

type flyConcurrency struct {
	Type      string `toml:"type"`
	SoftLimit int    `toml:"soft_limit"`
	HardLimit int    `toml:"hard_limit"`
}

type flyHTTPCheck struct {
	GracePeriod   *flyDuration      `toml:"grace_period"`
	Interval      *flyDuration      `toml:"interval"`
	Timeout       *flyDuration      `toml:"timeout"`
	Method        string            `toml:"method"`
	Path          string            `toml:"path"`
	Protocol      string            `toml:"protocol"`
	TLSServerName string            `toml:"tls_server_name"`
	TLSSkipVerify *bool             `toml:"tls_skip_verify"`
	Headers       map[string]string `toml:"headers"`
}

type flyMetrics struct {
	Port      int      `toml:"port"`
	Path      string   `toml:"path"`
	Processes []string `toml:"processes"`
}

type flyVM struct {
	Size      string   `toml:"size"`
	Memory    string   `toml:"memory"`
	MemoryMB  int      `toml:"memory_mb"`
	CPUs      int      `toml:"cpus"`
	CPUKind   string   `toml:"cpu_kind"`
	Processes []string `toml:"processes"`
}

// flyDuration is a Fly duration written with its unit ("120s"). flyctl
// also takes bare numbers, but reads them differently in different places
// (seconds in the docs of kill_timeout, milliseconds for checks,
// nanoseconds in fly-go's Duration), so a bare number is refused here.
type flyDuration struct{ time.Duration }

func (d *flyDuration) UnmarshalTOML(v any) error {
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("duration %v: write it as a string with a unit, like \"30s\"", v)
	}
	var err error
	d.Duration, err = time.ParseDuration(s)
	return err
}

// flyAutostop is auto_stop_machines: a boolean or "off", "stop", "suspend".
type flyAutostop struct{ mode string }

func (a *flyAutostop) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case bool:
		a.mode = map[bool]string{false: "off", true: "stop"}[v]
	case string:
		if !slices.Contains([]string{"off", "stop", "suspend"}, v) {
			return fmt.Errorf("auto_stop_machines %q: want off, stop or suspend", v)
		}
		a.mode = v
	default:
		return fmt.Errorf("auto_stop_machines %v: want a boolean or off, stop, suspend", v)
	}
	return nil
}

// loadFlyConfig decodes path strictly: unknown keys anywhere are an error.
func loadFlyConfig(t *testing.T, path string) flyConfig {
	t.Helper()
	var cfg flyConfig
	md, err := toml.DecodeFile(path, &cfg)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		t.Fatalf("%s: keys Fly does not know (or this test does not model yet): %s", path, strings.Join(keys, ", "))
	}
	return cfg
}

// flagInfo is what `imagegate <command> -h` says about one flag.
type flagInfo struct {
	env string
	def string
}

var defaultRE = regexp.MustCompile(`\(default ("(?:[^"\\]|\\.)*")\)$`)

// commandFlags lists the flags of an imagegate command by name, read from
// its own help output, so the deployment files are checked against the
// binary and not against a copy of its flag list.
func commandFlags(t *testing.T, command ...string) map[string]flagInfo {
	t.Helper()
	var help bytes.Buffer
	if err := run(t.Context(), append(command, "-h"), io.Discard, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("imagegate %s -h: %v", command, err)
	}
	flags := map[string]flagInfo{}
	sc := bufio.NewScanner(&help)
	var name string
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "  --"); ok {
			n, env, _ := strings.Cut(rest, " ")
			name = n
			flags[name] = flagInfo{env: strings.Trim(env, "()")}
			continue
		}
		if m := defaultRE.FindStringSubmatch(line); m != nil && name != "" {
			def, err := strconv.Unquote(m[1])
			if err != nil {
				t.Fatalf("default of --%s: %v", name, err)
			}
			f := flags[name]
			f.def = def
			flags[name] = f
		}
	}
	if len(flags) == 0 {
		t.Fatalf("imagegate %s -h listed no flags:\n%s", command, help.String())
	}
	return flags
}

// isSecretName reports whether an environment variable carries a
// credential by its name; those belong in `fly secrets`, never in a file.
func isSecretName(name string) bool {
	for _, word := range []string{"TOKEN", "SECRET", "PASSWORD", "SMTP_URL", "DATABASE_URL"} {
		if strings.Contains(name, word) {
			return true
		}
	}
	// KEY is a secret (SIGNING_KEY, ACCESS_KEY_ID), except where it names
	// where keys are: KEY_DIR, KEY_SERVICE_URL, KEY_SERVICE_CA_FILE.
	words := strings.Split(name, "_")
	for i, w := range words {
		if w == "KEY" && (i+1 == len(words) || (words[i+1] != "DIR" && words[i+1] != "SERVICE")) {
			return true
		}
	}
	return false
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return n
}

func TestFlyTomlDeploysTheGateway(t *testing.T) {
	t.Parallel()
	cfg := loadFlyConfig(t, flyTomlPath)
	flags := commandFlags(t, "serve")
	envOfFlag := map[string]string{} // IMAGEGATE_X → flag name
	for name, f := range flags {
		envOfFlag[f.env] = name
	}

	t.Run("app", func(t *testing.T) {
		if !regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`).MatchString(cfg.App) {
			t.Errorf("app %q: Fly app names are lowercase letters, digits and dashes", cfg.App)
		}
		if !regexp.MustCompile(`^[a-z]{3}$`).MatchString(cfg.PrimaryRegion) {
			t.Errorf("primary_region %q is not a three-letter region code", cfg.PrimaryRegion)
		}
	})

	t.Run("files the env names exist", func(t *testing.T) {
		for _, name := range []string{"IMAGEGATE_INFERENCE_CA_FILE", "IMAGEGATE_CONFIG"} {
			path, ok := cfg.Env[name]
			if !ok {
				continue
			}
			if !slices.ContainsFunc(cfg.Files, func(f flyFile) bool { return f.GuestPath == path }) {
				t.Errorf("[env] %s=%s, but no [[files]] entry puts a file there", name, path)
			}
		}
	})

	t.Run("env names are serve flags", func(t *testing.T) {
		for name := range cfg.Env {
			if strings.HasPrefix(name, "FLY_") {
				t.Errorf("[env] %s: names starting with FLY_ are Fly's own", name)
			}
			if _, ok := envOfFlag[name]; !ok && strings.HasPrefix(name, "IMAGEGATE_") {
				t.Errorf("[env] %s is no variable of imagegate serve (a typo would be silently ignored)", name)
			}
		}
	})

	t.Run("no secrets in the file", func(t *testing.T) {
		userinfo := regexp.MustCompile(`://[^/@\s]+@`)
		for name, value := range cfg.Env {
			if isSecretName(name) {
				t.Errorf("[env] %s is a credential: set it with `fly secrets set`", name)
			}
			if userinfo.MatchString(value) {
				t.Errorf("[env] %s holds a URL with credentials in it", name)
			}
		}
		// The rule must cover every credential serve takes (some are yet
		// to come).
		for _, env := range []string{"IMAGEGATE_ADMIN_TOKEN", "IMAGEGATE_INFERENCE_TOKEN", "IMAGEGATE_SIGNING_KEY",
			"IMAGEGATE_SIGNING_KEY_PREVIOUS", "IMAGEGATE_STRIPE_SECRET_KEY", "IMAGEGATE_STRIPE_WEBHOOK_SECRET",
			"IMAGEGATE_S3_ACCESS_KEY_ID", "IMAGEGATE_S3_SECRET_ACCESS_KEY", "IMAGEGATE_CLOUDFLARE_API_TOKEN",
			"IMAGEGATE_GOOGLE_CLIENT_SECRET", "IMAGEGATE_SMTP_URL", "IMAGEGATE_KEY_SERVICE_TOKEN", "IMAGEGATE_DATABASE_URL"} {
			if !isSecretName(env) {
				t.Errorf("%s is a credential the secret check misses", env)
			}
		}
		for _, env := range []string{"IMAGEGATE_KEY_DIR", "IMAGEGATE_KEY_SERVICE_URL", "IMAGEGATE_KEY_SERVICE_CA_FILE", "IMAGEGATE_DATA_DIR"} {
			if isSecretName(env) {
				t.Errorf("%s is no credential, yet the secret check would refuse it in [env]", env)
			}
		}
	})

	svc := cfg.HTTPService
	if svc == nil {
		t.Fatal("no [http_service]")
	}
	t.Run("http service", func(t *testing.T) {
		if got, want := svc.InternalPort, portOf(t, cfg.Env["IMAGEGATE_ADDR"]); got != want {
			t.Errorf("internal_port %d, but the gateway listens on %d (IMAGEGATE_ADDR)", got, want)
		}
		if !svc.ForceHTTPS {
			t.Error("force_https is off: visitors could use plain HTTP")
		}
		if cfg.Env["IMAGEGATE_HSTS"] != "true" {
			t.Error("IMAGEGATE_HSTS is not on although every request arrives over HTTPS")
		}
		c := svc.Concurrency
		if c == nil {
			t.Fatal("no [http_service.concurrency]")
		}
		if c.Type != "requests" {
			t.Errorf("concurrency type %q, want requests (visitors multiplex over HTTP/2)", c.Type)
		}
		if c.SoftLimit <= 0 || c.SoftLimit >= c.HardLimit {
			t.Errorf("concurrency soft %d, hard %d: want 0 < soft < hard", c.SoftLimit, c.HardLimit)
		}
		if svc.AutoStopMachines == nil || svc.AutoStopMachines.mode != "off" {
			t.Error("machines may be auto-stopped: a stopped machine misses purges and its volume's accounts go offline")
		}
	})

	t.Run("health check", func(t *testing.T) {
		var found bool
		for _, c := range svc.Checks {
			if strings.EqualFold(c.Method, "GET") && c.Path == "/healthz" {
				found = true
				if c.GracePeriod == nil || c.GracePeriod.Duration < 10*time.Second {
					t.Errorf("grace_period %v: the gateway may wait 10 s for the inference tier before listening", c.GracePeriod)
				}
				if c.Timeout == nil || c.Interval == nil || c.Timeout.Duration >= c.Interval.Duration {
					t.Errorf("check timeout %v must be set and shorter than its interval %v", c.Timeout, c.Interval)
				}
			}
		}
		if !found {
			t.Errorf("no GET /healthz check in %+v", svc.Checks)
		}
	})

	t.Run("volume", func(t *testing.T) {
		m := mountOf(t, cfg, gatewayGroup(cfg))
		if m.Destination != cfg.Env["IMAGEGATE_DATA_DIR"] || m.Destination == "" || m.Destination == "/" {
			t.Errorf("volume at %q, but the gateway keeps its bbolt files in %q (IMAGEGATE_DATA_DIR)", m.Destination, cfg.Env["IMAGEGATE_DATA_DIR"])
		}
		for _, m := range cfg.Mounts {
			if !regexp.MustCompile(`^[a-z0-9_]{1,30}$`).MatchString(m.Source) {
				t.Errorf("volume name %q: Fly wants lowercase letters, digits and underscores, at most 30", m.Source)
			}
			// Snapshots hold the key files that erasure destroys: they
			// must age out within the security log's 30-day retention
			// (store/doc.go).
			if m.SnapshotRetention == nil || *m.SnapshotRetention < 1 || *m.SnapshotRetention > 30 {
				t.Errorf("%s: snapshot_retention %v: set it, within 1..30 days", m.Source, m.SnapshotRetention)
			}
			for _, p := range m.Processes {
				if _, ok := cfg.Processes[p]; !ok {
					t.Errorf("%s mounts for process group %q, which [processes] does not define", m.Source, p)
				}
			}
		}
	})

	t.Run("key service", func(t *testing.T) {
		testFlyKeyService(t, cfg, flags)
	})

	t.Run("graceful shutdown", func(t *testing.T) {
		if cfg.KillSignal != "SIGTERM" {
			t.Errorf("kill_signal %q, want SIGTERM (the gateway drains on SIGTERM)", cfg.KillSignal)
		}
		reqTimeout, err := time.ParseDuration(flags["request-timeout"].def)
		if err != nil {
			t.Fatalf("default --request-timeout: %v", err)
		}
		if v, ok := cfg.Env["IMAGEGATE_REQUEST_TIMEOUT"]; ok {
			if reqTimeout, err = time.ParseDuration(v); err != nil {
				t.Fatalf("IMAGEGATE_REQUEST_TIMEOUT: %v", err)
			}
		}
		// A generation in flight may take the whole request timeout; the
		// stores close after it.
		const margin = 20 * time.Second
		if cfg.KillTimeout == nil || cfg.KillTimeout.Duration < reqTimeout+margin {
			t.Errorf("kill_timeout %v is shorter than the request timeout %v + %v to close", cfg.KillTimeout, reqTimeout, margin)
		}
		if cfg.KillTimeout != nil && cfg.KillTimeout.Duration > flyMaxKillTimeout {
			t.Errorf("kill_timeout %v exceeds Fly's maximum %v", cfg.KillTimeout, flyMaxKillTimeout)
		}
	})

	t.Run("peers", func(t *testing.T) {
		want := cfg.App + ".internal"
		if len(cfg.Processes) > 0 {
			want = gatewayGroup(cfg) + ".process." + cfg.App + ".internal"
		}
		if got := cfg.Env["IMAGEGATE_PEERS"]; got != want {
			t.Errorf("IMAGEGATE_PEERS %q, want %q: Fly's name for every started gateway machine of the app", got, want)
		}
		if got, want := cfg.Env["IMAGEGATE_PEER_PORT"], strconv.Itoa(svc.InternalPort); got != want {
			t.Errorf("IMAGEGATE_PEER_PORT %q, want the internal port %s", got, want)
		}
		if cfg.Env["IMAGEGATE_CLIENT_IP_HEADER"] != "Fly-Client-IP" || cfg.Env["IMAGEGATE_TRUSTED_PROXIES"] == "" {
			t.Error("client addresses: trust Fly's proxy and its Fly-Client-IP header")
		}
	})

	t.Run("metrics and vm", func(t *testing.T) {
		metricsPort := portOf(t, cfg.Env["IMAGEGATE_METRICS_ADDR"])
		for _, m := range cfg.Metrics {
			if m.Port != metricsPort || m.Path != "/metrics" {
				t.Errorf("metrics at :%d%s, but the gateway serves /metrics on %d (IMAGEGATE_METRICS_ADDR)", m.Port, m.Path, metricsPort)
			}
			if m.Port == svc.InternalPort {
				t.Errorf("metrics on the public port %d", m.Port)
			}
		}
		for _, vm := range cfg.VM {
			if vm.CPUKind != "" && vm.CPUKind != "shared" && vm.CPUKind != "performance" {
				t.Errorf("cpu_kind %q: shared or performance", vm.CPUKind)
			}
			if !regexp.MustCompile(`^(shared-cpu|performance)-\d+x$`).MatchString(vm.Size) {
				t.Errorf("vm size %q is not a Fly preset", vm.Size)
			}
			if !regexp.MustCompile(`^\d+(mb|gb)$`).MatchString(strings.ToLower(vm.Memory)) {
				t.Errorf("vm memory %q: a number with mb or gb", vm.Memory)
			}
		}
	})

	t.Run("build", func(t *testing.T) {
		b := cfg.Build
		if b == nil || b.Image != "" || b.Builder != "" {
			t.Fatalf("[build] %+v: build the repository's Dockerfile", b)
		}
		dockerfile := b.Dockerfile
		if dockerfile == "" {
			dockerfile = "Dockerfile"
		}
		stages := parseDockerfile(t, filepath.Join("../..", dockerfile))
		if b.BuildTarget != "" && stages.byName(b.BuildTarget) == nil {
			t.Errorf("build-target %q is no stage of the Dockerfile", b.BuildTarget)
		}
	})
}

func TestFlyTomlRefusesTypos(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct{ name, text, want string }{
		{"top-level key", "app = \"x\"\nkil_timeout = \"120s\"\n", "kil_timeout"},
		{"nested key", "[http_service]\n  internal_port = 8080\n  forse_https = true\n", "http_service.forse_https"},
		{"check key", "[http_service]\n  [[http_service.checks]]\n    pth = \"/healthz\"\n", "pth"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".toml")
		writeFile(t, path, []byte(tc.text))
		var cfg flyConfig
		md, err := toml.DecodeFile(path, &cfg)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var keys []string
		for _, k := range md.Undecoded() {
			keys = append(keys, k.String())
		}
		if !slices.ContainsFunc(keys, func(k string) bool { return strings.HasSuffix(k, tc.want) }) {
			t.Errorf("%s: undecoded %v, want %s among them", tc.name, keys, tc.want)
		}
	}
	for _, text := range []string{"kill_timeout = 120\n", "kill_timeout = \"two minutes\"\n"} {
		var cfg flyConfig
		if _, err := toml.Decode(text, &cfg); err == nil {
			t.Errorf("%q decoded; a duration needs a unit", text)
		}
	}
}

// TestFlyEnvStartsTheGateway runs the gateway with fly.toml's [env] and the
// secrets it requires, as a Fly machine would (the address and data
// directory moved to this machine's loopback and a temporary directory):
// with a PostgreSQL database and, when fly.toml has a keys process group,
// that group's own command line, with the same [env], as the key service.
// An account made through the gateway has its key in the key service's
// volume and none in the gateway's.
func TestFlyEnvStartsTheGateway(t *testing.T) {
	t.Parallel()
	cfg := loadFlyConfig(t, flyTomlPath)
	metricsAddr := freeLoopbackAddr(t)
	const keyToken = "fly-secret-key-service-token-0123456789"
	env := []string{
		"IMAGEGATE_ADMIN_TOKEN=fly-secret-admin-token-0123",
		"IMAGEGATE_KEY_SERVICE_TOKEN=" + keyToken,
		// The purge peers are resolved only at a purge, so the Fly-only
		// name stays unresolved here.
	}
	gatewayDir, keysDir := t.TempDir(), t.TempDir()
	var keys *proc
	if name, args := keysGroup(cfg); name != "" {
		// Fly gives every process group the same [env].
		var keysEnv []string
		for n, v := range cfg.Env {
			keysEnv = append(keysEnv, n+"="+v)
		}
		for i := range args {
			switch {
			case i > 0 && args[i-1] == "--addr":
				args[i] = "127.0.0.1:0"
			case i > 0 && args[i-1] == "--key-dir":
				args[i] = keysDir
			}
		}
		cmd := exec.Command(binary, append([]string{"keys", "serve"}, args...)...)
		cmd.Env = append(append(os.Environ(), keysEnv...), "IMAGEGATE_KEY_SERVICE_TOKEN="+keyToken)
		keys = startCmd(t, cmd)
		for cname, c := range cfg.Checks {
			if !slices.Contains(c.Processes, name) {
				continue
			}
			req, _ := http.NewRequest(c.Method, keys.url+c.Path, nil)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("Fly's check %s of the key service: %d", cname, resp.StatusCode)
			}
		}
	}
	if _, ok := cfg.Env["IMAGEGATE_KEY_SERVICE_URL"]; ok || keys != nil {
		env = append(env, "IMAGEGATE_DATABASE_URL="+testpeer.StartPostgres(t).NewDatabase(t))
	}
	for name, value := range cfg.Env {
		switch name {
		case "IMAGEGATE_ADDR":
			value = "127.0.0.1:0"
		case "IMAGEGATE_METRICS_ADDR":
			value = metricsAddr
		case "IMAGEGATE_DATA_DIR":
			value = gatewayDir
		case "IMAGEGATE_KEY_SERVICE_URL":
			if keys == nil {
				t.Fatal("IMAGEGATE_KEY_SERVICE_URL is set but no process group runs keys serve")
			}
			value = keys.url
		}
		env = append(env, name+"="+value)
	}
	sort.Strings(env)
	gw := startEnv(t, env)
	waitReady(t, gw.url)
	if keys != nil {
		newJarClient(t).expect(t, "POST", gw.url+"/v1/auth/signup", `{"email":"fly@example.com","password":"a long enough passphrase","over_18":true}`, 202)
		if files := keyFilesOf(t, gatewayDir); len(files) != 0 {
			t.Errorf("the gateway keeps key files of its own: %v", files)
		}
		raw, err := os.ReadFile(filepath.Join(keysDir, "imagegate.db.keys"))
		if err != nil || len(raw) < 2*48 || isZeroBytes(raw[48:]) {
			t.Errorf("no account key in the key service's file after a signup (%d bytes, %v)", len(raw), err)
		}
		if logs := keys.logs(); strings.Contains(logs, "level=ERROR") || strings.Contains(logs, `"level":"ERROR"`) || strings.Contains(logs, keyToken) {
			t.Errorf("the key service logged errors (or its token) on Fly's settings:\n%s", logs)
		}
	}
	for _, check := range cfg.HTTPService.Checks {
		req, _ := http.NewRequest(check.Method, gw.url+check.Path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("Fly's check %s %s: %d", check.Method, check.Path, resp.StatusCode)
		}
		if resp.Header.Get("Strict-Transport-Security") == "" {
			t.Errorf("no Strict-Transport-Security with IMAGEGATE_HSTS=%s", cfg.Env["IMAGEGATE_HSTS"])
		}
	}
	for _, m := range cfg.Metrics {
		resp, err := client.Get("http://" + metricsAddr + m.Path)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Contains(raw, []byte("imagegate_http_requests_total")) {
			t.Errorf("metrics at %s: %d", m.Path, resp.StatusCode)
		}
		// Not on the public listener.
		if resp, err := client.Get(gw.url + m.Path); err != nil || resp.StatusCode != 404 {
			t.Errorf("public %s: %v %v, want 404", m.Path, resp.StatusCode, err)
		}
	}
	if logs := gw.logs(); strings.Contains(logs, "level=ERROR") || strings.Contains(logs, `"level":"ERROR"`) {
		t.Errorf("the gateway logged errors on Fly's settings:\n%s", logs)
	}
}

// dockerStage is one FROM section of a Dockerfile.
type dockerStage struct {
	base, name string
	instr      []dockerInstr
}

type dockerInstr struct{ op, args string }

type dockerStages []dockerStage

func (s dockerStages) byName(name string) *dockerStage {
	for i := range s {
		if s[i].name == name {
			return &s[i]
		}
	}
	return nil
}

// all returns the arguments of every op instruction in the stage.
func (s *dockerStage) all(op string) []string {
	var out []string
	for _, in := range s.instr {
		if in.op == op {
			out = append(out, in.args)
		}
	}
	return out
}

// last returns the arguments of the stage's last op instruction, the one
// that takes effect for ENTRYPOINT, CMD and USER.
func (s *dockerStage) last(op string) string {
	all := s.all(op)
	if len(all) == 0 {
		return ""
	}
	return all[len(all)-1]
}

// parseDockerfile splits a Dockerfile into stages of instructions, joining
// continuation lines and dropping comments. Instructions before the first
// FROM (global ARGs) form a stage with no base.
func parseDockerfile(t *testing.T, path string) dockerStages {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	stages := dockerStages{{}}
	var pending string
	for _, line := range strings.Split(string(raw), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && pending == "") {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			pending += strings.TrimSuffix(trimmed, "\\") + " "
			continue
		}
		full := pending + trimmed
		pending = ""
		op, args, _ := strings.Cut(full, " ")
		op, args = strings.ToUpper(op), strings.TrimSpace(args)
		if op == "FROM" {
			f := strings.Fields(args)
			st := dockerStage{base: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
			continue
		}
		stages[len(stages)-1].instr = append(stages[len(stages)-1].instr, dockerInstr{op, args})
	}
	if pending != "" {
		t.Fatalf("%s ends in a continuation line", path)
	}
	return stages
}

// execForm decodes an instruction in exec (JSON array) form.
func execForm(t *testing.T, op, args string) []string {
	t.Helper()
	var out []string
	if err := json.Unmarshal([]byte(args), &out); err != nil {
		t.Fatalf("%s %s is not in exec form: %v", op, args, err)
	}
	return out
}

// goDirective is the go line of go.mod.
func goDirective(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(goModPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "go "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("go.mod has no go directive")
	return ""
}

func TestDockerfileMatchesTheTree(t *testing.T) {
	t.Parallel()
	stages := parseDockerfile(t, dockerfilePath)
	global := stages[0]
	if len(stages) < 3 {
		t.Fatalf("%d stages: want a build stage and a runtime stage", len(stages)-1)
	}
	build, runtime := stages[1], stages[len(stages)-1]

	t.Run("toolchain", func(t *testing.T) {
		want := "GO_VERSION=" + goDirective(t)
		if !slices.Contains(global.all("ARG"), want) {
			t.Errorf("global ARGs %v, want %s (go.mod's go directive)", global.all("ARG"), want)
		}
		if build.base != "golang:${GO_VERSION}" {
			t.Errorf("build stage FROM %s, want golang:${GO_VERSION}", build.base)
		}
	})

	t.Run("static reproducible build", func(t *testing.T) {
		env := strings.Join(build.all("ENV"), " ")
		for _, want := range []string{"CGO_ENABLED=0", "GOTOOLCHAIN=local"} {
			if !strings.Contains(env, want) {
				t.Errorf("build stage ENV %q lacks %s", env, want)
			}
		}
		var goBuild string
		for _, r := range build.all("RUN") {
			if strings.Contains(r, "go build") {
				goBuild = r
			}
		}
		for _, want := range []string{"-trimpath", "-X main.version=${VERSION}", "./cmd/imagegate"} {
			if !strings.Contains(goBuild, want) {
				t.Errorf("go build step %q lacks %s", goBuild, want)
			}
		}
		// -X main.version needs the variable to exist.
		_ = version
		for _, cp := range build.all("COPY") {
			f := strings.Fields(cp)
			for _, src := range f[:len(f)-1] {
				if src == "." || strings.HasPrefix(src, "--") {
					continue
				}
				if _, err := os.Stat(filepath.Join("../..", src)); err != nil {
					t.Errorf("COPY %s: %v", src, err)
				}
			}
		}
	})

	serveFlags, inferenceFlags := commandFlags(t, "serve"), commandFlags(t, "inference")
	fly := loadFlyConfig(t, flyTomlPath)
	wantExpose := fmt.Sprint(portOf(t, serveFlags["addr"].def), " ", portOf(t, inferenceFlags["addr"].def))

	t.Run("runtime image", func(t *testing.T) {
		if runtime.name != "runtime" || !strings.HasPrefix(runtime.base, "gcr.io/distroless/static") {
			t.Errorf("the default (last) stage is %s FROM %s, want runtime FROM distroless static", runtime.name, runtime.base)
		}
		if got := execForm(t, "ENTRYPOINT", runtime.last("ENTRYPOINT")); !cmp.Equal(got, []string{"/imagegate"}) {
			t.Errorf("ENTRYPOINT %v, want [/imagegate]", got)
		}
		if got := execForm(t, "CMD", runtime.last("CMD")); !cmp.Equal(got, []string{"serve"}) {
			t.Errorf("CMD %v, want [serve]", got)
		}
		if u := runtime.last("USER"); u == "" || u == "0" || strings.HasPrefix(u, "root") || strings.HasPrefix(u, "0:") {
			t.Errorf("USER %q: the image must not run as root", u)
		}
		if got := runtime.last("EXPOSE"); got != wantExpose {
			t.Errorf("EXPOSE %q, want %q (serve's and inference's default ports)", got, wantExpose)
		}
		dataDir := fly.Env["IMAGEGATE_DATA_DIR"]
		if got := runtime.last("VOLUME"); got != dataDir {
			t.Errorf("VOLUME %q, want %q", got, dataDir)
		}
		if !slices.Contains(runtime.all("ENV"), "IMAGEGATE_DATA_DIR="+dataDir) {
			t.Errorf("runtime ENV %v does not point the data directory at the volume", runtime.all("ENV"))
		}
	})

	t.Run("fly image", func(t *testing.T) {
		st := stages.byName(fly.Build.BuildTarget)
		if st == nil {
			t.Fatalf("no stage %q", fly.Build.BuildTarget)
		}
		if got := execForm(t, "CMD", st.last("CMD")); !cmp.Equal(got, []string{"serve"}) {
			t.Errorf("CMD %v, want [serve]", got)
		}
		if got := st.last("EXPOSE"); got != wantExpose {
			t.Errorf("EXPOSE %q, want %q", got, wantExpose)
		}
		ep := execForm(t, "ENTRYPOINT", st.last("ENTRYPOINT"))
		if len(ep) != 4 || ep[0] != "/bin/sh" || ep[1] != "-c" || ep[3] != "/imagegate" {
			t.Fatalf("ENTRYPOINT %q, want [/bin/sh -c <script> /imagegate]", ep)
		}
		if out, err := exec.Command("sh", "-n", "-c", ep[2]).CombinedOutput(); err != nil {
			t.Errorf("the entrypoint script does not parse: %v\n%s", err, out)
		}
	})
}

// TestFlyEntrypointHandsTheVolumeToTheUnprivilegedUser runs the fly
// stage's entrypoint script as Fly does, as root on a root-owned data
// directory, with the real binary: the gateway must come up as uid 65532
// without privileges and write its files into the directory.
func TestFlyEntrypointHandsTheVolumeToTheUnprivilegedUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		testpeer.Unavailable(t, "needs root, as the image's entrypoint starts with; run `make test` as root, as CI does")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		testpeer.Missing(t, "setpriv", "Debian util-linux; the fly image has it")
	}
	fly := loadFlyConfig(t, flyTomlPath)
	st := parseDockerfile(t, dockerfilePath).byName(fly.Build.BuildTarget)
	if st == nil {
		t.Fatalf("no stage %q", fly.Build.BuildTarget)
	}
	ep := execForm(t, "ENTRYPOINT", st.last("ENTRYPOINT"))

	// The unprivileged user must reach the binary and the data directory:
	// t.TempDir's parents are private to root.
	root, err := os.MkdirTemp("", "imagegate-fly-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "imagegate")
	raw, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(root, "data")
	if err := os.Mkdir(dataDir, 0o755); err != nil { // as Fly mounts it: root's
		t.Fatal(err)
	}

	cmd := exec.Command(ep[0], ep[1], ep[2], bin, "serve")
	cmd.Env = append(os.Environ(), "IMAGEGATE_LOG_LEVEL=warn", "IMAGEGATE_ADDR=127.0.0.1:0", "IMAGEGATE_DATA_DIR="+dataDir)
	url := startCmd(t, cmd).url
	waitReady(t, url)

	// exec all the way down: the process Fly signals is imagegate itself.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(status), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	want := map[string]string{"Name": "imagegate", "Uid": "65532 65532 65532 65532", "Gid": "65532 65532 65532 65532", "Groups": "", "NoNewPrivs": "1"}
	got := map[string]string{}
	for k := range want {
		got[k] = fields[k]
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("gateway process (-want +got):\n%s", diff)
	}
	entries, err := os.ReadDir(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatal("the gateway wrote nothing into the data directory")
	}
	for _, e := range append([]os.DirEntry{nil}, entries...) {
		path := dataDir
		if e != nil {
			path = filepath.Join(dataDir, e.Name())
		}
		if uid := fileOwner(t, path); uid != 65532 {
			t.Errorf("%s is owned by %d, want 65532", path, uid)
		}
	}
}

func TestDockerignoreKeepsTheBuildInputs(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(dockerignorePath)
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			t.Fatalf(".dockerignore exception %q: teach dockerignored about it", line)
		}
		patterns = append(patterns, line)
	}

	for _, p := range []string{".git/HEAD", "data/imagegate.db", "data/signing.key", ".tools/bin/versitygw", "imagegate",
		"cmd/imagegate/imagegate.test", ".notes/HELPERS.md"} {
		if !dockerignored(patterns, p) {
			t.Errorf("%s would be sent to the Docker build", p)
		}
	}

	// Everything go build reads for the binary, with cgo off as in the
	// image, must stay in the build context.
	list := exec.Command("go", "list", "-deps", "-f",
		`{{if .Module}}{{if .Module.Main}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}{{range .EmbedFiles}} {{.}}{{end}}{{end}}{{end}}`,
		".")
	list.Env = append(os.Environ(), "CGO_ENABLED=0")
	var listErr bytes.Buffer
	list.Stderr = &listErr
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, listErr.String())
	}
	moduleRoot, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	needed := []string{"go.mod", "go.sum", "Dockerfile"}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		rel, err := filepath.Rel(moduleRoot, f[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, file := range f[1:] {
			needed = append(needed, filepath.ToSlash(filepath.Join(rel, file)))
		}
	}
	if len(needed) < 20 {
		t.Fatalf("go list found only %v", needed)
	}
	for _, p := range needed {
		if dockerignored(patterns, p) {
			t.Errorf(".dockerignore drops %s, which the build needs", p)
		}
	}
}

func fileOwner(t *testing.T, path string) uint32 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		testpeer.Unavailable(t, "no Unix file owners here")
	}
	return st.Uid
}

// dockerignored reports whether a context-relative path is excluded by
// patterns, as Docker reads them: each pattern is matched from the context
// root against the path and each of its parent directories, and a leading
// "**/" matches any number of directories.
func dockerignored(patterns []string, path string) bool {
	parts := strings.Split(path, "/")
	for _, p := range patterns {
		p = strings.Trim(filepath.ToSlash(filepath.Clean(p)), "/")
		if rest, ok := strings.CutPrefix(p, "**/"); ok {
			for i := range parts {
				if ok, _ := filepath.Match(rest, strings.Join(parts[i:], "/")); ok {
					return true
				}
			}
			continue
		}
		for i := 1; i <= len(parts); i++ {
			if ok, _ := filepath.Match(p, strings.Join(parts[:i], "/")); ok {
				return true
			}
		}
	}
	return false
}

// gatedBackend is retro, except that each generation waits for release.
type gatedBackend struct {
	inference.Backend
	started chan struct{}
	release chan struct{}
}

func (b *gatedBackend) Generate(ctx context.Context, req inference.Request, progress inference.ProgressFunc) (inference.Result, error) {
	b.started <- struct{}{}
	select {
	case <-b.release:
	case <-ctx.Done():
		return inference.Result{}, ctx.Err()
	}
	return b.Backend.Generate(ctx, req, progress)
}

// TestSIGTERMDrainsGenerationsInFlight stops a gateway, as Fly's
// kill_signal does, while a generation is running: the gateway stops
// taking connections at once, yet the visitor waiting for the image gets
// it, and the process exits cleanly.
func TestSIGTERMDrainsGenerationsInFlight(t *testing.T) {
	t.Parallel()
	const token = "drain-test-token-0123456789"
	backend := &gatedBackend{Backend: retro.New(), started: make(chan struct{}, 1), release: make(chan struct{})}
	tier, err := inference.NewServer(inference.ServerConfig{Token: token}, []inference.Backend{backend}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newH2CServer(tier.Handler())
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	gw := startEnv(t, []string{"IMAGEGATE_LOG_LEVEL=info"}, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--inference", "http://"+ln.Addr().String(), "--inference-token", token)
	waitReady(t, gw.url)

	type result struct {
		resp *http.Response
		out  map[string]any
	}
	done := make(chan result, 1)
	go func() {
		resp, err := client.Post(gw.url+"/v1/images/generations", "application/json",
			strings.NewReader(`{"prompt":"finish me before you go","size":"256x256"}`))
		if err != nil {
			t.Errorf("the generation in flight failed: %v", err)
			done <- result{}
			return
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		done <- result{resp, out}
	}()
	select {
	case <-backend.started:
	case <-time.After(60 * time.Second):
		t.Fatalf("the generation never reached the tier:\n%s", gw.logs())
	}

	if err := gw.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Shutting down is an event the gateway reports; wait for it.
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(gw.logs(), "shutting down") {
		if time.Now().After(deadline) {
			t.Fatalf("no shutdown after SIGTERM:\n%s", gw.logs())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The listener is closed: nobody new gets in...
	for {
		conn, err := net.Dial("tcp", strings.TrimPrefix(strings.Replace(gw.url, "localhost", "127.0.0.1", 1), "http://"))
		if err != nil {
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("the gateway still accepts connections while shutting down")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// ...but the visitor already inside gets the image.
	close(backend.release)
	r := <-done
	if r.resp == nil {
		t.FailNow()
	}
	if r.resp.StatusCode != 200 {
		t.Errorf("in-flight generation: status %d %v", r.resp.StatusCode, r.out)
	}
	if err := gw.cmd.Wait(); err != nil {
		t.Errorf("the gateway did not exit cleanly: %v\n%s", err, gw.logs())
	}
}

// wafValid is Cloudflare's is_timed_hmac_valid_v0(key, uri, ttl, now, 8,
// "s") as docs/DEPLOY.md configures it: uri ends in a 8-character
// separator, a 10-digit issue time, "-" and the URL-safe unpadded base64 of
// HMAC-SHA256(key, message + issue time), where message is what precedes
// the separator.
func wafValid(key, uri string, ttl, now int64) bool {
	const sepLen, issuedLen, macLen = 8, 10, 43
	if len(uri) < sepLen+issuedLen+1+macLen {
		return false
	}
	tail := uri[len(uri)-(issuedLen+1+macLen):]
	message := uri[:len(uri)-len(tail)-sepLen]
	issuedText, macText := tail[:issuedLen], tail[issuedLen+1:]
	issued, err := strconv.ParseInt(issuedText, 10, 64)
	if err != nil || tail[issuedLen] != '-' || now-issued > ttl {
		return false
	}
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(message + issuedText))
	return hmac.Equal([]byte(base64.RawURLEncoding.EncodeToString(m.Sum(nil))), []byte(macText))
}

// TestSignedLinksMatchTheWAFRule checks the claim docs/DEPLOY.md (4.4)
// makes operators rely on: the key literal of the WAF rule is the signing
// key's text, whether given with --signing-key or generated into
// <data-dir>/signing.key, and the rule's other arguments describe our links.
func TestSignedLinksMatchTheWAFRule(t *testing.T) {
	t.Parallel()
	// As `openssl rand -hex 32` prints it.
	const given = "3f9c0a5e7b1d2c4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6"
	ttl := int64((24 * time.Hour).Seconds()) // --link-ttl's default, the rule's 86400
	for _, tc := range []struct {
		name string
		env  []string
		key  func(dataDir string) string
	}{
		{"generated key file", nil, func(dataDir string) string {
			raw, err := os.ReadFile(filepath.Join(dataDir, "signing.key"))
			if err != nil {
				t.Fatal(err)
			}
			return strings.TrimRight(string(raw), "\r\n")
		}},
		{"--signing-key", []string{"IMAGEGATE_SIGNING_KEY=" + given}, func(string) string { return given }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dataDir := t.TempDir()
			gw := startEnv(t, tc.env, "--addr", "127.0.0.1:0", "--data-dir", dataDir)
			waitReady(t, gw.url)
			resp, out := generate(t, gw.url, `{"prompt":"a link for the edge to check","size":"256x256"}`)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d %v", resp.StatusCode, out)
			}
			link, err := url.Parse(firstURL(t, out))
			if err != nil {
				t.Fatal(err)
			}
			uri := link.EscapedPath() + "?" + link.RawQuery
			if !strings.HasPrefix(link.RawQuery, "verify=") || !strings.HasPrefix(uri, "/o/") {
				t.Fatalf("link %s is not /o/…?verify=…", uri)
			}
			key, now := tc.key(dataDir), time.Now().Unix()
			if !wafValid(key, uri, ttl, now) {
				if raw, err := hex.DecodeString(key); err == nil && wafValid(string(raw), uri, ttl, now) {
					t.Fatalf("serve.go hex-decodes the signing key, so its text is not the WAF key literal: our link %s verifies only under the decoded bytes", uri)
				}
				t.Fatalf("the WAF rule with the signing key's text refuses our own link %s", uri)
			}
			if wafValid(key, uri, ttl, now+ttl+1) {
				t.Error("the link is still valid to the rule after --link-ttl")
			}
			if wafValid(key+"x", uri, ttl, now) {
				t.Error("the rule accepts the link under another key")
			}
		})
	}
}

// freeLoopbackAddr returns a loopback address whose port was free a moment
// ago (the process under test binds it itself).
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
