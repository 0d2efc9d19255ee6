package main

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// gatewayGroup is the Fly process group running `imagegate serve`: "app"
// without [processes].
func gatewayGroup(cfg flyConfig) string {
	for name, command := range cfg.Processes {
		if f := strings.Fields(command); len(f) > 0 && f[0] == "serve" {
			return name
		}
	}
	return "app"
}

// keysGroup is the Fly process group running `imagegate keys serve`, and
// its arguments after "keys serve"; "" when there is none.
func keysGroup(cfg flyConfig) (string, []string) {
	for name, command := range cfg.Processes {
		if f := strings.Fields(command); len(f) >= 2 && f[0] == "keys" && f[1] == "serve" {
			return name, f[2:]
		}
	}
	return "", nil
}

// mountOf is the one mount of a process group (mounts without processes
// belong to every group).
func mountOf(t *testing.T, cfg flyConfig, group string) flyMount {
	t.Helper()
	var found []flyMount
	for _, m := range cfg.Mounts {
		if len(m.Processes) == 0 || slices.Contains(m.Processes, group) {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("process group %q has %d mounts, want one", group, len(found))
	}
	return found[0]
}

// flagValues reads "--name value" and "--name=value" pairs, refusing any
// name not in flags.
func flagValues(t *testing.T, args []string, flags map[string]flagInfo) map[string]string {
	t.Helper()
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		name, ok := strings.CutPrefix(args[i], "--")
		if !ok {
			t.Fatalf("argument %q is not a --flag", args[i])
		}
		name, value, hasValue := strings.Cut(name, "=")
		if _, known := flags[name]; !known {
			t.Errorf("--%s is no flag of the command", name)
		}
		if !hasValue {
			if i+1 == len(args) {
				t.Fatalf("--%s has no value", name)
			}
			i++
			value = args[i]
		}
		out[name] = value
	}
	return out
}

// testFlyKeyService checks the fleet layout: the gateways in one process
// group with per-machine volumes and the public service, the key service
// in another with the one volume of key files, no public port, a health
// check, and the gateways pointed at it by Fly's private DNS name.
func testFlyKeyService(t *testing.T, cfg flyConfig, serveFlags map[string]flagInfo) {
	gw := gatewayGroup(cfg)
	keys, args := keysGroup(cfg)
	if keys == "" {
		t.Fatalf("[processes] %v runs no `keys serve`: a fleet on separate volumes cannot share key files", cfg.Processes)
	}
	if cfg.Processes[gw] != "serve" {
		t.Errorf("the gateway group %q runs %q, want serve", gw, cfg.Processes[gw])
	}
	kv := flagValues(t, args, commandFlags(t, "keys", "serve"))
	keyDir, addr := kv["key-dir"], kv["addr"]
	if keyDir == "" || addr == "" {
		t.Fatalf("keys serve %v: give --addr and --key-dir on its command line ([env] is the gateways')", args)
	}
	if _, ok := kv["key-service-token"]; ok {
		t.Error("the key service token is on the command line: set IMAGEGATE_KEY_SERVICE_TOKEN as a secret")
	}
	km, gm := mountOf(t, cfg, keys), mountOf(t, cfg, gw)
	if km.Destination != keyDir {
		t.Errorf("the keys volume is at %q, but keys serve keeps the files in %q", km.Destination, keyDir)
	}
	if km.Source == gm.Source {
		t.Errorf("the key service and the gateways share the volume name %q: the key files must be on their own volume", km.Source)
	}
	// The fly image's entrypoint hands IMAGEGATE_DATA_DIR to the
	// unprivileged user; the key files must be there to be writable.
	if keyDir != cfg.Env["IMAGEGATE_DATA_DIR"] {
		t.Errorf("--key-dir %q is not IMAGEGATE_DATA_DIR %q, which the entrypoint makes writable", keyDir, cfg.Env["IMAGEGATE_DATA_DIR"])
	}
	if svc := cfg.HTTPService; svc == nil || !cmpStrings(svc.Processes, []string{gw}) {
		t.Errorf("[http_service] processes %v, want [%s]: the key service must have no public port", cfg.HTTPService.Processes, gw)
	}
	u, err := url.Parse(cfg.Env["IMAGEGATE_KEY_SERVICE_URL"])
	if err != nil || u.Scheme != "http" && u.Scheme != "https" {
		t.Fatalf("IMAGEGATE_KEY_SERVICE_URL %q: %v", cfg.Env["IMAGEGATE_KEY_SERVICE_URL"], err)
	}
	if want := keys + ".process." + cfg.App + ".internal"; u.Hostname() != want {
		t.Errorf("IMAGEGATE_KEY_SERVICE_URL names %s, want %s (Fly's name of the %s group's machines)", u.Hostname(), want, keys)
	}
	port := portOf(t, addr)
	if u.Port() != strconv.Itoa(port) {
		t.Errorf("IMAGEGATE_KEY_SERVICE_URL port %s, but keys serve listens on %d", u.Port(), port)
	}
	if _, ok := serveFlags["key-service-url"]; !ok {
		t.Error("serve has no --key-service-url")
	}
	var checked bool
	for name, c := range cfg.Checks {
		if !slices.Contains(c.Processes, keys) {
			continue
		}
		checked = true
		if c.Type != "http" || c.Port != port || c.Path != "/healthz" || !strings.EqualFold(c.Method, "GET") {
			t.Errorf("[checks.%s] %+v: want an http GET /healthz on port %d", name, c, port)
		}
		if c.Timeout == nil || c.Interval == nil || c.Timeout.Duration >= c.Interval.Duration {
			t.Errorf("[checks.%s] timeout %v must be set and shorter than its interval %v", name, c.Timeout, c.Interval)
		}
	}
	if !checked {
		t.Errorf("no [checks] entry for the %s group", keys)
	}
	for _, groups := range [][]string{cfg.HTTPService.Processes} {
		for _, g := range groups {
			if _, ok := cfg.Processes[g]; !ok {
				t.Errorf("process group %q is not in [processes]", g)
			}
		}
	}
	for _, m := range cfg.Metrics {
		if slices.Contains(m.Processes, keys) || len(m.Processes) == 0 {
			t.Errorf("[[metrics]] %+v scrapes the key service, which serves no /metrics", m)
		}
	}
	for _, vm := range cfg.VM {
		for _, g := range vm.Processes {
			if _, ok := cfg.Processes[g]; !ok {
				t.Errorf("[[vm]] for process group %q, which [processes] does not define", g)
			}
		}
	}
}

func cmpStrings(a, b []string) bool { return slices.Equal(a, b) }
