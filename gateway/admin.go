package gateway

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/cache"
	"github.com/imagegate/imagegate/edge"
)

// Security-log kinds of operator actions (promise S3: audit-logged).
const (
	eventAdminRefused    = "admin_refused"
	eventAdminPurge      = "admin_purge"
	eventAdminInvalidate = "admin_invalidate"
)

// purger purges the CDN; *edge.Purger implements it.
type purger interface {
	Purge(ctx context.Context, req edge.PurgeRequest) (*edge.PurgeReport, error)
	Plan(req edge.PurgeRequest) (*edge.PurgeReport, error)
}

// objectDeleter removes outputs from the object store shared by every
// gateway; edge.Local and edge.S3 implement it.
type objectDeleter interface {
	Delete(ctx context.Context, name string) error
}

// outputExts are the extensions an output can have.
var outputExts = []string{"png", "jpg", "webp"}

// errAdminOff answers admin routes when no admin token is configured.
var errAdminOff = &apiError{Status: fiber.StatusForbidden, Type: "permission_error", Code: "admin_disabled", Msg: "the admin API is disabled: start the gateway with --admin-token"}

// refusalLogPolicy bounds the security-log rows one client's refused admin
// tokens write: enough to show the operator an attack, too few to flood
// the log.
var refusalLogPolicy = LimitPolicy{Quota: 10, Window: time.Hour}

// requireAdmin admits requests bearing the operator's admin token, a
// credential separate from every user credential (promise S3). Refusals
// are written to the security log too.
func (g *Gateway) requireAdmin(c *fiber.Ctx) error {
	return g.requireBearer(c, g.cfg.AdminToken)
}

// requirePeer guards POST /v1/admin/invalidate, the one admin route other
// gateways call: it admits the admin token or the peer token derived from
// it.
func (g *Gateway) requirePeer(c *fiber.Ctx) error {
	return g.requireBearer(c, g.cfg.AdminToken, peerToken(g.cfg.AdminToken))
}

// peerToken is the credential gateways present to each other. It is
// derived from the admin token, so operators keep one secret, yet it opens
// only /v1/admin/invalidate: a peer address that points somewhere wrong
// leaks the right to empty caches, not the admin API.
func peerToken(adminToken string) string {
	if adminToken == "" {
		return ""
	}
	m := hmac.New(sha256.New, []byte(adminToken))
	m.Write([]byte("imagegate peer invalidate v1"))
	return "peer_" + hex.EncodeToString(m.Sum(nil))
}

// requireBearer admits a request whose bearer token is one of accepted,
// comparing digests in constant time.
func (g *Gateway) requireBearer(c *fiber.Ctx, accepted ...string) error {
	if g.cfg.AdminToken == "" {
		return errAdminOff
	}
	scheme, token, _ := strings.Cut(c.Get(fiber.HeaderAuthorization), " ")
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	ok := 0
	for _, a := range accepted {
		want := sha256.Sum256([]byte(a))
		ok |= subtle.ConstantTimeCompare(want[:], got[:])
	}
	if !strings.EqualFold(scheme, "Bearer") || ok != 1 {
		cl := g.clientOf(c)
		if g.refusals.Allow("admin:" + cl.ip) {
			g.securityEventFrom(cl, eventAdminRefused, "", "route="+routeOf(c))
		}
		return &apiError{Status: fiber.StatusUnauthorized, Type: "authentication_error", Code: "invalid_admin_token", Msg: "admin token required"}
	}
	return c.Next()
}

// purgeJSON is the body of POST /v1/admin/purge and of the peer-to-peer
// POST /v1/admin/invalidate.
type purgeJSON struct {
	// Objects are output hashes: each is deleted from the object store,
	// dropped from every gateway's tiers and purged from the CDN; the next
	// request for it generates it again.
	Objects []string `json:"objects"`
	// Tags, Prefixes and Hosts purge the CDN and the matching entries of
	// every gateway's tiers. URLs purge the CDN (and the gateways' tiers
	// for output URLs).
	URLs       []string `json:"urls"`
	Tags       []string `json:"tags"`
	Prefixes   []string `json:"prefixes"`
	Hosts      []string `json:"hosts"`
	Everything bool     `json:"everything"`
	DryRun     bool     `json:"dry_run"`
}

func (p purgeJSON) empty() bool {
	return len(p.Objects)+len(p.URLs)+len(p.Tags)+len(p.Prefixes)+len(p.Hosts) == 0 && !p.Everything
}

// nodeResult is what one gateway did.
type nodeResult struct {
	Node    string `json:"node"`
	OK      bool   `json:"ok"`
	Entries int    `json:"entries,omitempty"`
	Error   string `json:"error,omitempty"`
}

type purgeResult struct {
	DryRun bool `json:"dry_run"`
	// ObjectsDeleted lists object-store names removed.
	ObjectsDeleted []string `json:"objects_deleted"`
	// CDN is the CDN purge report, or CDNSkipped says why there was none.
	CDN        *edge.PurgeReport `json:"cdn,omitempty"`
	CDNSkipped string            `json:"cdn_skipped,omitempty"`
	CDNError   string            `json:"cdn_error,omitempty"`
	Nodes      []nodeResult      `json:"nodes"`
}

// adminPurge purges outputs from the CDN and from every gateway's tiers
// (POST /v1/admin/purge). The answer reports each part; any failure makes
// it 502 so scripts notice, and everything is audit-logged.
func (g *Gateway) adminPurge(c *fiber.Ctx) error {
	var req purgeJSON
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	if err := g.checkPurge(req); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res := g.purge(ctx, req)
	status := fiber.StatusOK
	outcome := "ok"
	if res.failed() {
		status, outcome = fiber.StatusBadGateway, "partial"
	}
	kind := eventAdminPurge
	g.securityEvent(c, kind, "", fmt.Sprintf("objects=%d urls=%d tags=%d prefixes=%d hosts=%d everything=%t dry_run=%t result=%s",
		len(req.Objects), len(req.URLs), len(req.Tags), len(req.Prefixes), len(req.Hosts), req.Everything, req.DryRun, outcome))
	return c.Status(status).JSON(res)
}

func (r purgeResult) failed() bool {
	if r.CDNError != "" || (r.CDN != nil && len(r.CDN.Failed()) > 0) {
		return true
	}
	for _, n := range r.Nodes {
		if !n.OK {
			return true
		}
	}
	return false
}

// checkPurge refuses a malformed purge before anything happens.
func (g *Gateway) checkPurge(req purgeJSON) error {
	if req.empty() {
		return badRequest("empty_purge", "name objects, urls, tags, prefixes, hosts or everything")
	}
	for _, h := range req.Objects {
		if !isObjectHash(h) {
			return badRequest("invalid_object", fmt.Sprintf("objects: %q is not a 64-digit lowercase hex hash", h))
		}
	}
	cdn := edge.PurgeRequest{URLs: req.URLs, Tags: req.Tags, Prefixes: req.Prefixes, Hosts: req.Hosts}
	if len(cdn.URLs)+len(cdn.Tags)+len(cdn.Prefixes)+len(cdn.Hosts) == 0 {
		return nil
	}
	if err := cdn.Validate(); err != nil {
		return badRequest("invalid_purge", err.Error())
	}
	return nil
}

func isObjectHash(h string) bool {
	if len(h) != 64 {
		return false
	}
	for i := range len(h) {
		if c := h[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// purge does the work of a checked request: delete objects from the
// shared store, invalidate this node, fan out to peers, purge the CDN.
func (g *Gateway) purge(ctx context.Context, req purgeJSON) purgeResult {
	res := purgeResult{DryRun: req.DryRun, ObjectsDeleted: []string{}}
	cdn := edge.PurgeRequest{URLs: req.URLs, Tags: req.Tags, Prefixes: req.Prefixes, Hosts: req.Hosts, Everything: req.Everything}
	for _, h := range req.Objects {
		cdn.Tags = append(cdn.Tags, edge.ObjectTag(h))
		if g.cfg.CDNURL != "" {
			for _, ext := range outputExts {
				cdn.URLs = append(cdn.URLs, edge.OutputURL(g.cfg.CDNURL, h, ext))
			}
		}
	}
	if req.DryRun {
		res.Nodes = append(res.Nodes, nodeResult{Node: "self", OK: true})
		for _, p := range g.peers.list(ctx) {
			res.Nodes = append(res.Nodes, nodeResult{Node: p, OK: true})
		}
		if g.purger == nil {
			res.CDNSkipped = "CDN purge is not configured (no Cloudflare token): only the gateways' caches would be purged"
		} else if rep, err := g.purger.Plan(cdn); err != nil {
			res.CDNError = err.Error()
		} else {
			res.CDN = rep
		}
		return res
	}

	// The shared object store first: once an output is gone there, no
	// node can find it again through a manifest, whatever the order in
	// which the nodes forget it.
	for _, h := range req.Objects {
		for _, ext := range outputExts {
			name := edge.OutputName(h, ext)
			if err := g.objects.Delete(ctx, name); err != nil {
				res.Nodes = append(res.Nodes, nodeResult{Node: "object-store", Error: err.Error()})
				continue
			}
			res.ObjectsDeleted = append(res.ObjectsDeleted, name)
		}
		names, err := g.purgeManifests(ctx, h)
		res.ObjectsDeleted = append(res.ObjectsDeleted, names...)
		if err != nil {
			res.Nodes = append(res.Nodes, nodeResult{Node: "object-store", Error: err.Error()})
		}
	}
	n, err := g.invalidateLocal(req)
	self := nodeResult{Node: "self", OK: err == nil, Entries: n}
	if err != nil {
		self.Error = err.Error()
	}
	res.Nodes = append(res.Nodes, self)
	res.Nodes = append(res.Nodes, g.peers.invalidate(ctx, req)...)

	if g.purger == nil {
		res.CDNSkipped = "CDN purge is not configured (no Cloudflare token): only the gateways' caches were purged"
		return res
	}
	rep, err := g.purger.Purge(ctx, cdn)
	res.CDN = rep
	if err != nil {
		res.CDNError = err.Error()
	}
	return res
}

// adminInvalidate is the peer-to-peer half of a purge: drop the matching
// entries from this node's own tiers (POST /v1/admin/invalidate).
func (g *Gateway) adminInvalidate(c *fiber.Ctx) error {
	var req purgeJSON
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	if err := g.checkPurge(req); err != nil {
		return err
	}
	// This node may know keys of the purged outputs that the purging
	// node does not: their manifests go too.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	for _, h := range req.Objects {
		_, err := g.purgeManifests(ctx, h)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	n, err := g.invalidateLocal(req)
	if err != nil {
		return err
	}
	g.securityEvent(c, eventAdminInvalidate, "", fmt.Sprintf("entries=%d", n))
	return c.JSON(nodeResult{Node: "self", OK: true, Entries: n})
}

// purgeStore knows which content keys mapped to an output.
type purgeStore interface {
	ObjectKeys(hash string) ([]string, error)
}

// purgeManifests deletes from the object store the L3 manifest of every
// content key known to map to the output hash, in the store or in this
// node's cache, so nothing about a purged output remains there (a
// manifest alone would be a miss, but it still says what was asked). It
// must run before the node's tiers forget the output. It returns the
// names it deleted.
func (g *Gateway) purgeManifests(ctx context.Context, hash string) ([]string, error) {
	keys, err := g.store.ObjectKeys(hash)
	if err != nil {
		return nil, err
	}
	local, err := g.cache.ObjectKeys(hash)
	if err != nil {
		return nil, err
	}
	for _, k := range local {
		if ks := k.String(); !slices.Contains(keys, ks) {
			keys = append(keys, ks)
		}
	}
	var names []string
	var errs []error
	for _, k := range keys {
		name := cache.ManifestName(k)
		if err := g.objects.Delete(ctx, name); err != nil {
			errs = append(errs, err)
			continue
		}
		names = append(names, name)
	}
	return names, errors.Join(errs...)
}

// invalidateLocal drops what req names from this node's L1 and L2.
func (g *Gateway) invalidateLocal(req purgeJSON) (int, error) {
	if req.Everything {
		return 0, g.cache.InvalidateAll()
	}
	var errs []error
	for _, h := range req.Objects {
		g.tags.forget(h)
		errs = append(errs, g.cache.InvalidateObject(h))
	}
	match := purgeMatcher(req, g.cfg.CDNURL)
	if match == nil {
		return 0, errors.Join(errs...)
	}
	n, err := g.cache.InvalidateWhere(match)
	return n, errors.Join(append(errs, err)...)
}

// purgeMatcher selects the cache entries a CDN-style purge covers: object
// and model tags, the all-outputs tag, output URLs and URL prefixes under
// /o/. Owner tags are resolved by the caller (they need the store).
func purgeMatcher(req purgeJSON, cdnURL string) func(cache.Entry) bool {
	var objects, prefixes []string
	var models []string
	all := false
	for _, t := range req.Tags {
		t = strings.ToLower(t)
		switch {
		case t == edge.OutputsTag:
			all = true
		case strings.HasPrefix(t, "ig-o:"):
			objects = append(objects, strings.TrimPrefix(t, "ig-o:"))
		case strings.HasPrefix(t, "ig-m:"):
			models = append(models, t)
		}
	}
	for _, u := range req.URLs {
		if h, _, ok := edge.ParseOutputPath(urlPath(u)); ok {
			objects = append(objects, h)
		}
	}
	for _, p := range req.Prefixes {
		// A prefix is host/path. Under /o/ it selects hashes by prefix;
		// one that stops short of /o/ ("host", "host/", "host/o")
		// covers every output.
		_, path, _ := strings.Cut(p, "/")
		path = "/" + path
		switch {
		case strings.HasPrefix(path, "/o/"):
			prefixes = append(prefixes, strings.TrimPrefix(path, "/o/"))
		case strings.HasPrefix("/o/", path):
			all = true
		}
	}
	if len(req.Hosts) > 0 {
		all = true // a host purge covers every output served under it
	}
	if !all && len(objects)+len(prefixes)+len(models) == 0 {
		return nil
	}
	return func(e cache.Entry) bool {
		if all {
			return true
		}
		for _, h := range objects {
			if e.Object == h {
				return true
			}
		}
		for _, p := range prefixes {
			if strings.HasPrefix(e.Object, p) {
				return true
			}
		}
		for _, m := range models {
			if edge.ModelTag(e.Model, e.ModelVersion) == m {
				return true
			}
		}
		return false
	}
}

// urlPath returns the path of an absolute URL, or "".
func urlPath(u string) string {
	_, rest, ok := strings.Cut(u, "://")
	if !ok {
		return ""
	}
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return ""
	}
	p := rest[i:]
	if j := strings.IndexAny(p, "?#"); j >= 0 {
		p = p[:j]
	}
	return p
}
