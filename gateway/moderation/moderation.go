// Package moderation owns imagegate's content policy (promise C6): the
// built-in rules for apparent CSAM, the operator's term lists and patterns,
// and an optional external classifier over HTTP. A Moderator judges a
// prompt (with the reference image of an edit) before anything is reserved
// or generated, and an output after the GPU returns and before anything is
// stored. Apparent CSAM is recorded as a report under legal hold and the
// account that asked is suspended.
//
// It is a plain Go API: the gateway wires New with a Store and calls
// CheckPrompt and CheckOutput from its handlers; refusals are
// *apierror.Error values the gateway's error handler sends as they are.
// The operator routes that list reports live in package gateway.
package moderation

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"hash/maphash"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"

	"github.com/imagegate/imagegate/gateway/apierror"
	"github.com/imagegate/imagegate/store"
)

// Moderation categories imagegate knows. Rules may name others.
const (
	// categorySexualMinors is apparent CSAM: it always blocks, is reported
	// under legal hold and suspends the account that asked.
	categorySexualMinors = "sexual_minors"
	categorySexual       = "sexual"
	categoryViolence     = "violence"
	categoryHate         = "hate"
	categorySelfHarm     = "self_harm"
	// categoryUnspecified is a classifier's "flagged" without a category;
	// it always blocks.
	categoryUnspecified = "unspecified"
)

// defaultBlock is what blocks when the configuration does not say.
var defaultBlock = []string{categorySexualMinors, categorySexual, categoryViolence, categoryHate, categorySelfHarm}

// Moderation stages, the stage label of the metrics.
const (
	stagePrompt = "prompt"
	stageOutput = "output"
)

// EventAccountSuspended is the security-log kind of a suspension by
// moderation.
const EventAccountSuspended = "account_suspended"

// Config configures content moderation (promise C6): a built-in
// policy of term lists and patterns, each rule with a category, and an
// optional external classifier over HTTP. Prompts are judged before
// anything is reserved or generated; outputs after the GPU returns and
// before anything is stored. The [moderation] section of --config.
type Config struct {
	// Block lists the categories that refuse a request. Absent: sexual_minors,
	// sexual, violence, hate, self_harm; an empty list blocks only what
	// always blocks: sexual_minors (apparent CSAM) and a classifier's
	// unspecified flag.
	Block []string `toml:"block"`
	// Rules are the operator's term lists and patterns, judged together
	// with the built-in rules.
	Rules []Rule `toml:"rules"`
	// NoBuiltinRules drops the built-in rules for apparent CSAM, for an
	// operator who replaces them with rules of their own.
	NoBuiltinRules bool `toml:"no_builtin_rules"`
	// Classifier is an external classifier; it is the only judge of
	// images, because term rules cannot see pixels.
	Classifier ClassifierConfig `toml:"classifier"`
	// LegalHold is how long a report of apparent CSAM, and the material,
	// is kept (one year, as U.S. law requires). Set from the retention
	// schedule, not from the [moderation] section.
	LegalHold time.Duration `toml:"-"`
}

// Rule flags text with its Category when one of Terms or
// Patterns matches and, if With is set, one of With matches too (a rule
// "a minor term with a sexual term" is Terms = minors, With = sexual).
//
// Matching sees the text Unicode-normalised (NFKD, accents and invisible
// characters dropped, case folded, look-alike letters of other scripts
// read as Latin) and split into words: runs of letters and digits. A
// term matches whole words only, so "ass" never matches "classic"; a
// term of several words matches them in sequence whatever separates them
// ("child-porn", "child  porn"); a word ending in * matches by prefix
// ("nud*": nude, nudes, nudity). Text is read several ways at once: as
// written, with look-alike digits and symbols inside words read as
// letters ("s3x", "@ss"), and with spelled-out letters joined
// ("n u d e"). Ideographic and Thai text, written without spaces, is
// matched character by character.
//
// Patterns are RE2 regular expressions, case-insensitive, run on each
// reading of the text with its words separated by single spaces.
type Rule struct {
	Category string   `toml:"category"`
	Terms    []string `toml:"terms"`
	Patterns []string `toml:"patterns"`
	With     []string `toml:"with"`
}

// ClassifierConfig is an external moderation classifier. The request is
// the OpenAI moderation API's (POST {"model", "input": [{"type": "text",
// "text"}, {"type": "image_url", "image_url": {"url": "data:…"}}]}), so
// OpenAI's /v1/moderations and compatible services work as they are. The
// answer is either {"flagged", "categories": {name: bool}} or OpenAI's
// {"results": [{"flagged", "categories"}]}; category names are read with
// "/", "-" and spaces as "_", and a sub-category counts as its category
// ("self-harm/intent" is self_harm, "sexual/minors" is sexual_minors).
type ClassifierConfig struct {
	// URL receives the POST; https, or http to a loopback address.
	URL string `toml:"url"`
	// Token is sent as a bearer token when set.
	Token string `toml:"token"`
	// Model names the classifier model when the service needs one
	// ("omni-moderation-latest").
	Model string `toml:"model"`
	// Timeout bounds one call (5 s).
	Timeout time.Duration `toml:"timeout"`
	// FailOpen lets content pass when the classifier cannot answer. By
	// default moderation fails closed: 503 with Retry-After.
	FailOpen bool `toml:"fail_open"`
}

var categoryName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,39}$`)

func (c *Config) setDefaults() {
	if c.Block == nil {
		c.Block = slices.Clone(defaultBlock)
	}
	if c.Classifier.Timeout == 0 {
		c.Classifier.Timeout = 5 * time.Second
	}
	if c.LegalHold == 0 {
		c.LegalHold = 365 * 24 * time.Hour
	}
}

// Validate fills defaults and reports every problem at once.
func (c *Config) Validate() error {
	c.setDefaults()
	var errs []error
	for _, b := range c.Block {
		if !categoryName.MatchString(b) {
			errs = append(errs, fmt.Errorf("gateway: moderation: block: %q is not a category name (a-z, 0-9, _)", b))
		}
	}
	for i, r := range c.Rules {
		if _, err := compileRule(r); err != nil {
			errs = append(errs, fmt.Errorf("gateway: moderation: rule %d: %w", i+1, err))
		}
	}
	if c.Classifier.URL != "" {
		if err := checkClassifierURL(c.Classifier.URL); err != nil {
			errs = append(errs, err)
		}
	} else if c.Classifier.Token != "" || c.Classifier.Model != "" || c.Classifier.FailOpen {
		errs = append(errs, errors.New("gateway: moderation: classifier settings need a classifier url"))
	}
	if c.Classifier.Timeout < 100*time.Millisecond || c.Classifier.Timeout > time.Minute {
		errs = append(errs, errors.New("gateway: moderation: classifier timeout must be between 100ms and 1m"))
	}
	if c.LegalHold < 365*24*time.Hour {
		errs = append(errs, errors.New("gateway: moderation: the legal hold of reports lasts at least one year"))
	}
	return errors.Join(errs...)
}

// checkClassifierURL refuses to send prompts and images anywhere but over
// TLS, or to this machine.
func checkClassifierURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil {
		return fmt.Errorf("gateway: moderation: classifier url %q must be an absolute URL without credentials", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if ip := net.ParseIP(u.Hostname()); u.Hostname() == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
	}
	return fmt.Errorf("gateway: moderation: classifier url %q must be https (http only to a loopback address)", raw)
}

// builtinRules flag apparent CSAM in prompts. They are deliberately
// narrow: a match reports the prompt under legal hold and suspends the
// account, so a term that has innocent uses ("minor", "kid" alone) only
// counts next to a sexual term ("baby" is left out: "baby doll
// lingerie"). Operators add their own rules for this and every other
// category; a classifier catches what words miss.
var builtinRules = []Rule{
	{
		Category: categorySexualMinors,
		Terms: []string{
			"child porn*", "childporn*", "child pornograph*", "kiddie porn*", "kiddy porn*", "csam",
			"jailbait", "loli", "lolis", "lolicon", "shota", "shotacon", "underage porn*", "underage sex*",
		},
	},
	{
		Category: categorySexualMinors,
		Terms: []string{
			"child", "children", "childs", "kid", "kids", "kiddie", "kiddies", "underage", "under age",
			"preteen*", "pre teen*", "toddler*", "infant*", "schoolgirl*", "schoolboy*",
			"little girl*", "little boy*", "young girl*", "young boy*", "teen", "teens", "teenage*",
			"middle schooler*", "elementary schooler*",
		},
		// "12 year old", "12yo", "12 yrs old": ages under 18.
		Patterns: []string{`\b([1-9]|1[0-7]) ?(years? ?old|yrs? ?old|yo)\b`},
		With: []string{
			"nude*", "naked", "nudity", "nsfw", "sex", "sexual*", "sexy", "porn*", "erotic*", "topless",
			"bottomless", "lingerie", "undress*", "genital*", "xxx", "hentai", "fetish*", "seductive",
		},
	},
}

// Subject is who asked: an account, or an anonymous visitor known only by
// address.
type Subject struct {
	AccountID string // empty: an anonymous visitor
	Addr      netip.Addr
}

// Request is what is judged before generation, and what a report keeps.
type Request struct {
	Prompt         string
	NegativePrompt string
	// Reference is the reference image of an edit, nil for a generation.
	Reference []byte
	// Params returns the request parameters a report keeps. It is called
	// only when a report is recorded; nil keeps none.
	Params func() map[string]string
}

// content is what a classifier judges: text, an image, or both.
type content struct {
	text        string
	image       []byte
	contentType string
}

// classifier judges content against the content policy and returns the
// categories it flags (none: the content is fine). *policy and
// *httpClassifier implement it.
type classifier interface {
	classify(ctx context.Context, c content) ([]string, error)
}

// Store keeps reports of apparent CSAM and suspends accounts.
type Store interface {
	CreateReport(r store.Report, hold time.Duration) (store.Report, error)
	Reports() ([]store.Report, error)
	Report(id string) (store.Report, error)
	Account(id string) (store.Account, error)
	SetStatus(id string, status store.AccountStatus) error
	LogSecurityEvent(store.SecurityEvent) error
}

// Moderator applies the content policy to prompts and outputs (promise
// C6). It is a prometheus.Collector of its own counters.
type Moderator struct {
	classifiers []classifier // the built-in policy, then the external classifier if any
	block       map[string]bool
	failOpen    bool
	hold        time.Duration
	store       Store
	logger      *slog.Logger
	now         func() time.Time

	blocked  *prometheus.CounterVec // by category and stage
	failures *prometheus.CounterVec // classifier failures by stage and what was done
	reports  prometheus.Counter

	// version is Version's answer, fixed at New.
	version uint64

	// passed remembers prompts every classifier allowed, so a popular
	// prompt (a cache hit, mostly) is judged once, not on every request.
	// Only passes are remembered: a refused prompt is judged (and, for
	// apparent CSAM, reported) each time.
	passed *passCache
}

// passCache is a bounded set of prompt digests that passed moderation. The
// digest is a seeded 64-bit maphash: the seed is secret and per process,
// so nobody can craft a refused prompt that collides with an allowed one.
// Rules and classifiers are fixed for the process's life, so a pass stays
// valid; when full, the set is emptied (it refills with what is popular).
type passCache struct {
	mu   sync.RWMutex
	set  map[uint64]struct{}
	max  int
	seed maphash.Seed
}

func newPassCache(max int) *passCache {
	return &passCache{set: make(map[uint64]struct{}), max: max, seed: maphash.MakeSeed()}
}

func (pc *passCache) digest(prompt string) uint64 { return maphash.String(pc.seed, prompt) }

func (pc *passCache) has(k uint64) bool {
	pc.mu.RLock()
	defer pc.mu.RUnlock()
	_, ok := pc.set[k]
	return ok
}

func (pc *passCache) add(k uint64) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if len(pc.set) >= pc.max {
		clear(pc.set)
	}
	pc.set[k] = struct{}{}
}

func New(cfg Config, st Store, logger *slog.Logger, client *http.Client, now func() time.Time) (*Moderator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rules := cfg.Rules
	if !cfg.NoBuiltinRules {
		rules = append(slices.Clone(builtinRules), rules...)
	}
	pol, err := newPolicy(rules)
	if err != nil {
		return nil, err
	}
	m := &Moderator{
		passed:      newPassCache(1 << 16),
		classifiers: []classifier{pol},
		block:       map[string]bool{categorySexualMinors: true, categoryUnspecified: true},
		failOpen:    cfg.Classifier.FailOpen,
		hold:        cfg.LegalHold,
		store:       st,
		logger:      logger,
		now:         now,
		blocked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imagegate_moderation_blocked_total",
			Help: "Prompts and outputs refused by moderation, by category and stage (prompt, output).",
		}, []string{"category", "stage"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imagegate_moderation_classifier_failures_total",
			Help: "Calls to the external moderation classifier that failed, by stage and action (refused: fail closed, passed: fail open).",
		}, []string{"stage", "action"}),
		reports: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imagegate_moderation_reports_total",
			Help: "Reports of apparent CSAM recorded under legal hold.",
		}),
	}
	for _, b := range cfg.Block {
		m.block[b] = true
	}
	for cat := range m.block {
		m.blocked.WithLabelValues(cat, stagePrompt)
		m.blocked.WithLabelValues(cat, stageOutput)
	}
	m.version = policyVersion(m.block, rules, cfg.Classifier)
	if cfg.Classifier.URL != "" {
		known := map[string]bool{categorySexualMinors: true, categorySexual: true, categoryViolence: true, categoryHate: true, categorySelfHarm: true}
		for cat := range m.block {
			known[cat] = true
		}
		for _, r := range rules {
			known[r.Category] = true
		}
		if client == nil {
			client = &http.Client{}
		}
		m.classifiers = append(m.classifiers, &httpClassifier{cfg: cfg.Classifier, client: client, known: known})
	}
	return m, nil
}

// Describe implements prometheus.Collector.
func (m *Moderator) Describe(ch chan<- *prometheus.Desc) {
	m.blocked.Describe(ch)
	m.failures.Describe(ch)
	m.reports.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Moderator) Collect(ch chan<- prometheus.Metric) {
	m.blocked.Collect(ch)
	m.failures.Collect(ch)
	m.reports.Collect(ch)
}

// CheckPrompt returns an error (a 4xx *apierror.Error) when the request must not
// be generated, or a 503 when the classifier cannot answer and moderation
// fails closed. Call it before anything is reserved or generated: a
// refusal then costs nothing and stores nothing.
//
// The prompt is judged, and with it the reference image of an edit; the
// negative prompt is judged by the same rules, since it steers the image
// as much as the prompt does (with the default rules a negative prompt of
// "nsfw, nude" is therefore refused too). Apparent CSAM in either is
// reported (with the reference image, if any) and the account suspended.
func (m *Moderator) CheckPrompt(ctx context.Context, py Subject, p Request) error {
	if err := m.checkText(ctx, py, p, "prompt", p.Prompt, p.Reference); err != nil {
		return err
	}
	if p.NegativePrompt == "" {
		return nil
	}
	// The negative prompt steers the image too, and is judged (and
	// reported) exactly like the prompt.
	return m.checkText(ctx, py, p, "negative_prompt", p.NegativePrompt, nil)
}

// PromptPassed reports whether CheckPrompt would pass p without judging
// anything: p has no reference image and its prompt and negative prompt
// are among the texts that passed before. It changes nothing, so a caller
// may ask before it has charged the request for its check.
func (m *Moderator) PromptPassed(p Request) bool {
	if len(p.Reference) > 0 || !m.passed.has(m.passed.digest(p.Prompt)) {
		return false
	}
	return p.NegativePrompt == "" || m.passed.has(m.passed.digest(p.NegativePrompt))
}

// checkText judges one text field of p (with the reference image, if
// any), naming field in a refusal.
func (m *Moderator) checkText(ctx context.Context, py Subject, p Request, field, text string, reference []byte) error {
	c := content{text: text, image: reference}
	var digest uint64
	if len(reference) > 0 {
		c.contentType = http.DetectContentType(reference)
	} else {
		digest = m.passed.digest(text)
		if m.passed.has(digest) {
			return nil
		}
	}
	cat, whole, err := m.judge(ctx, stagePrompt, c)
	if err != nil {
		return err
	}
	if cat == "" {
		// A pass by fail-open, with a classifier unheard, is not
		// remembered: the text is judged again once it answers.
		if len(reference) == 0 && whole {
			m.passed.add(digest)
		}
		return nil
	}
	if cat == categorySexualMinors {
		m.report(py, p, store.ReportFromPrompt, c.image, c.contentType)
	}
	return &apierror.Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "content_policy_violation",
		Msg: fmt.Sprintf("%s: refused by the content policy (%s); nothing was generated or charged", field, cat)}
}

// Version numbers the content policy this moderator applies: the block
// list, every rule (the built-in ones included) and which classifier
// judges. It is never 0, and changes whenever any of those does, so an
// output judged under another version must be judged again before it is
// served (see cache.Entry.Policy). Comparing it costs nothing.
func (m *Moderator) Version() uint64 { return m.version }

// policyVersion digests what decides a verdict, in a fixed order.
func policyVersion(block map[string]bool, rules []Rule, cl ClassifierConfig) uint64 {
	h := fnv.New64a()
	cats := slices.Sorted(maps.Keys(block))
	enc := json.NewEncoder(h)
	enc.Encode(cats)
	enc.Encode(rules)
	enc.Encode([]string{cl.URL, cl.Model})
	return max(h.Sum64(), 1)
}

// CheckOutput returns an error when a generated image must not be stored
// or shown. Call it after the GPU returns and before anything is stored,
// so a flagged image never reaches the object store or a cache tier.
//
// Only the external classifier can judge pixels: without one every
// output passes. A flagged output of apparent CSAM is kept inside its
// sealed report, never in the object store.
func (m *Moderator) CheckOutput(ctx context.Context, py Subject, p Request, image []byte, contentType string) error {
	_, err := m.JudgeOutput(ctx, py, p, image, contentType)
	return err
}

// JudgeOutput is CheckOutput that also returns the policy version the
// output passed under: Version, or 0 when a failed classifier was skipped
// (fail open), so that the output is judged again on its next hit.
func (m *Moderator) JudgeOutput(ctx context.Context, py Subject, p Request, image []byte, contentType string) (uint64, error) {
	cat, whole, err := m.judge(ctx, stageOutput, content{image: image, contentType: contentType})
	if err != nil {
		return 0, err
	}
	if cat == "" {
		if !whole {
			return 0, nil
		}
		return m.version, nil
	}
	if cat == categorySexualMinors {
		m.report(py, p, store.ReportFromOutput, image, contentType)
	}
	return 0, &apierror.Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "content_policy_violation",
		Msg: fmt.Sprintf("the generated image was refused by the content policy (%s); nothing was stored or charged", cat)}
}

// judge runs every classifier and returns the blocking category, if any:
// sexual_minors before any other, then the first blocking one in the
// classifiers' order. Every classifier runs until apparent CSAM is found,
// so a rule that blocks for another category never hides it. whole is
// false when a failed classifier was skipped (fail open).
func (m *Moderator) judge(ctx context.Context, stage string, c content) (cat string, whole bool, err error) {
	var found []string
	whole = true
	for _, cl := range m.classifiers {
		cats, err := cl.classify(ctx, c)
		if err != nil {
			if m.failOpen {
				m.failures.WithLabelValues(stage, "passed").Inc()
				m.logger.Warn("moderation classifier failed; passing (fail open)", "stage", stage, "err", err)
				whole = false
				continue
			}
			m.failures.WithLabelValues(stage, "refused").Inc()
			return "", false, apierror.Unavailable("content moderation is unavailable; retry shortly", 5, err)
		}
		found = append(found, cats...)
		if slices.Contains(found, categorySexualMinors) {
			break
		}
	}
	if slices.Contains(found, categorySexualMinors) {
		cat = categorySexualMinors
	} else if i := slices.IndexFunc(found, func(c string) bool { return m.block[c] }); i >= 0 {
		cat = found[i]
	}
	if cat != "" {
		m.blocked.WithLabelValues(cat, stage).Inc()
		m.logger.Info("moderation refused content", "stage", stage, "category", cat)
	}
	return cat, whole, nil
}

// report records apparent CSAM under legal hold and suspends the account
// that asked. Failures are logged, never shown: the request is refused
// either way.
func (m *Moderator) report(py Subject, p Request, source string, image []byte, contentType string) {
	r := store.Report{
		Category: categorySexualMinors, Source: source, AccountID: py.AccountID,
		Prompt: p.Prompt, NegativePrompt: p.NegativePrompt,
		Image: image, ContentType: contentType,
	}
	if p.Params != nil {
		r.Params = p.Params()
	}
	if py.AccountID == "" {
		// A visitor without an account is known only by address.
		r.ClientIP = py.Addr.String()
	}
	rep, err := m.store.CreateReport(r, m.hold)
	if err != nil {
		m.logger.Error("moderation report not recorded", "stage", source, "err", err)
	} else {
		m.reports.Inc()
		m.logger.Warn("apparent CSAM reported and held", "report", rep.ID, "stage", source)
	}
	if py.AccountID == "" {
		return
	}
	acct, err := m.store.Account(py.AccountID)
	if err != nil || acct.Status != store.StatusActive {
		// Gone, being erased, or already suspended: nothing to do.
		return
	}
	if err := m.store.SetStatus(py.AccountID, store.StatusSuspended); err != nil {
		m.logger.Error("account not suspended after a moderation report", "err", err)
		return
	}
	detail := "moderation category=" + categorySexualMinors
	if rep.ID != "" {
		detail += " report=" + rep.ID
	}
	err = m.store.LogSecurityEvent(store.SecurityEvent{Kind: EventAccountSuspended, AccountID: py.AccountID, Detail: detail})
	if err != nil {
		m.logger.Error("security log write failed", "kind", EventAccountSuspended, "err", err)
	}
}

// policy is the built-in classifier: term lists and patterns. It judges
// text only.
type policy struct {
	rules []compiledRule
	// Terms of every rule, indexed by their first word for a single pass
	// over the text; terms whose first word is a prefix are scanned at
	// every position.
	terms    []term
	byFirst  map[string][]int
	starring []int
}

type compiledRule struct {
	category string
	patterns []*regexp.Regexp
	hasWith  bool
}

// term is one term of a rule: its words, which of them match by prefix,
// and whether it is one of the rule's With terms.
type term struct {
	words  []string
	prefix []bool
	rule   int
	with   bool
}

func newPolicy(rules []Rule) (*policy, error) {
	p := &policy{byFirst: map[string][]int{}}
	for i, r := range rules {
		cr, err := compileRule(r)
		if err != nil {
			return nil, fmt.Errorf("gateway: moderation: rule %d: %w", i+1, err)
		}
		p.rules = append(p.rules, cr.compiledRule)
		for _, t := range cr.terms {
			t.rule = i
			if t.prefix[0] {
				p.starring = append(p.starring, len(p.terms))
			} else {
				p.byFirst[t.words[0]] = append(p.byFirst[t.words[0]], len(p.terms))
			}
			p.terms = append(p.terms, t)
		}
	}
	return p, nil
}

type ruleParts struct {
	compiledRule
	terms []term
}

// compileRule checks and compiles one rule.
func compileRule(r Rule) (ruleParts, error) {
	var errs []error
	if !categoryName.MatchString(r.Category) {
		errs = append(errs, fmt.Errorf("category %q is not a category name (a-z, 0-9, _)", r.Category))
	}
	if len(r.Terms)+len(r.Patterns) == 0 {
		errs = append(errs, errors.New("needs terms or patterns"))
	}
	out := ruleParts{compiledRule: compiledRule{category: r.Category, hasWith: len(r.With) > 0}}
	for _, list := range []struct {
		terms []string
		with  bool
	}{{r.Terms, false}, {r.With, true}} {
		for _, s := range list.terms {
			t, err := parseTerm(s)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			t.with = list.with
			out.terms = append(out.terms, t)
		}
	}
	for _, s := range r.Patterns {
		re, err := regexp.Compile("(?i)" + s)
		if err != nil {
			errs = append(errs, fmt.Errorf("pattern %q: %w", s, err))
			continue
		}
		out.patterns = append(out.patterns, re)
	}
	return out, errors.Join(errs...)
}

// parseTerm normalises a term the way text is normalised, keeping a
// trailing * on a word as "match by prefix".
func parseTerm(s string) (term, error) {
	var t term
	for _, tok := range tokenize(fold(s), false, true) {
		t.words = append(t.words, tok.word)
		t.prefix = append(t.prefix, tok.star)
	}
	if len(t.words) == 0 {
		return t, fmt.Errorf("term %q has no letters or digits", s)
	}
	stars := 0
	for _, p := range t.prefix {
		if p {
			stars++
		}
	}
	if stars != strings.Count(s, "*") || starInsideWord(s) {
		return t, fmt.Errorf("term %q: * may only end a word", s)
	}
	return t, nil
}

// starInsideWord reports a '*' followed by a letter or digit ("fo*o").
func starInsideWord(s string) bool {
	for i, r := range s {
		if r != '*' {
			continue
		}
		next, _ := utf8.DecodeRuneInString(s[i+1:])
		if unicode.IsLetter(next) || unicode.IsDigit(next) {
			return true
		}
	}
	return false
}

// classify implements classifier. Images pass: words cannot judge pixels.
func (p *policy) classify(_ context.Context, c content) ([]string, error) {
	if c.text == "" {
		return nil, nil
	}
	type hit struct{ main, with bool }
	hits := make([]hit, len(p.rules))
	readings := readings(c.text)
	for _, words := range readings {
		p.scan(words, func(t *term) {
			if t.with {
				hits[t.rule].with = true
			} else {
				hits[t.rule].main = true
			}
		})
	}
	var cats []string
	for i, r := range p.rules {
		h := hits[i]
		if !h.main && len(r.patterns) > 0 && (!r.hasWith || h.with) {
			for _, words := range readings {
				joined := strings.Join(words, " ")
				if slices.ContainsFunc(r.patterns, func(re *regexp.Regexp) bool { return re.MatchString(joined) }) {
					h.main = true
					break
				}
			}
		}
		if h.main && (!r.hasWith || h.with) && !slices.Contains(cats, r.category) {
			cats = append(cats, r.category)
		}
	}
	return cats, nil
}

// scan calls hit for every term found in words.
func (p *policy) scan(words []string, hit func(*term)) {
	for i, w := range words {
		for _, ti := range p.byFirst[w] {
			if p.terms[ti].at(words, i) {
				hit(&p.terms[ti])
			}
		}
		for _, ti := range p.starring {
			if p.terms[ti].at(words, i) {
				hit(&p.terms[ti])
			}
		}
	}
}

// at reports whether the term's words start at words[i].
func (t *term) at(words []string, i int) bool {
	if i+len(t.words) > len(words) {
		return false
	}
	for j, w := range t.words {
		got := words[i+j]
		if got != w && !(t.prefix[j] && strings.HasPrefix(got, w)) {
			return false
		}
	}
	return true
}

// confusables reads letters of other scripts that look like Latin ones
// as Latin, so a Cyrillic "о" inside an English word does not hide it.
var confusables = map[rune]rune{
	'а': 'a', 'е': 'e', 'о': 'o', 'р': 'p', 'с': 'c', 'у': 'y', 'х': 'x', 'і': 'i', 'ј': 'j', 'ѕ': 's',
	'ԁ': 'd', 'ԛ': 'q', 'ԝ': 'w', 'к': 'k', 'ɑ': 'a', 'ɡ': 'g', 'ı': 'i',
	'ο': 'o', 'α': 'a', 'ε': 'e', 'ι': 'i', 'κ': 'k', 'ν': 'v', 'ρ': 'p', 'τ': 't', 'υ': 'u', 'χ': 'x',
}

// leet reads digits and symbols inside a word as the letters they stand
// in for.
var leet = map[rune]rune{'0': 'o', '1': 'i', '3': 'e', '4': 'a', '5': 's', '7': 't', '@': 'a', '$': 's'}

// fold normalises text for matching: compatibility decomposition (full-
// width, ligatures, styled letters become plain), case folding, accents
// and invisible characters dropped, confusable letters read as Latin.
func fold(s string) string {
	if isASCII(s) {
		return strings.ToLower(s)
	}
	s = cases.Fold().String(norm.NFKD.String(s))
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf):
			continue
		case r == utf8.RuneError:
			r = ' '
		}
		r = unicode.ToLower(r)
		if c, ok := confusables[r]; ok {
			r = c
		}
		b.WriteRune(r)
	}
	return b.String()
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// unspaced reports scripts written without spaces between words, whose
// characters are matched one by one.
func unspaced(r rune) bool {
	return r >= 0x0e00 && unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana, unicode.Thai)
}

type piece struct {
	word string
	star bool // followed by '*' (terms only)
}

// tokenize splits folded text into words: runs of letters and digits.
// With leetspeak, '@' and '$' join words too, and a word holding a letter
// has its digits and symbols read through leet; a word without letters
// keeps its digits.
func tokenize(s string, withLeet, stars bool) []piece {
	var toks []piece
	var cur []rune
	letter := false
	flush := func(star bool) {
		if withLeet {
			out := cur[:0]
			for _, r := range cur {
				if l, ok := leet[r]; ok && letter {
					r = l
				} else if r == '@' || r == '$' {
					continue
				}
				out = append(out, r)
			}
			cur = out
		}
		if len(cur) > 0 {
			toks = append(toks, piece{word: string(cur), star: stars && star})
		}
		cur, letter = cur[:0], false
	}
	for _, r := range s {
		switch {
		case unspaced(r):
			flush(false)
			cur = append(cur, r)
			flush(false)
		case unicode.IsLetter(r):
			cur, letter = append(cur, r), true
		case unicode.IsDigit(r), withLeet && (r == '@' || r == '$'):
			cur = append(cur, r)
		default:
			flush(r == '*')
		}
	}
	flush(false)
	return toks
}

// readings are the ways a text is read for matching: as written, through
// leetspeak, and each with runs of single spelled-out characters joined
// ("n u d e"). Duplicates are dropped.
func readings(text string) [][]string {
	f := fold(text)
	var out [][]string
	add := func(words []string) {
		for _, o := range out {
			if slices.Equal(o, words) {
				return
			}
		}
		out = append(out, words)
	}
	for _, withLeet := range []bool{false, true} {
		toks := tokenize(f, withLeet, false)
		words := make([]string, len(toks))
		for i, t := range toks {
			words[i] = t.word
		}
		add(words)
		add(joinSingles(words))
	}
	return out
}

// joinSingles joins runs of two or more one-character words ("s e x").
func joinSingles(words []string) []string {
	single := func(w string) bool {
		r, n := utf8.DecodeRuneInString(w)
		return n == len(w) && !unspaced(r)
	}
	out := make([]string, 0, len(words))
	for i := 0; i < len(words); {
		j := i
		for j < len(words) && single(words[j]) {
			j++
		}
		if j-i >= 2 {
			out = append(out, strings.Join(words[i:j], ""))
			i = j
			continue
		}
		out = append(out, words[i])
		i++
	}
	return out
}

// httpClassifier asks an external moderation service.
type httpClassifier struct {
	cfg    ClassifierConfig
	client *http.Client
	// known are the categories the policy names; a sub-category in an
	// answer counts as the known category it starts with.
	known map[string]bool
}

type classifierRequest struct {
	Model string            `json:"model,omitempty"`
	Input []classifierInput `json:"input"`
}

type classifierInput struct {
	Type     string         `json:"type"`
	Text     string         `json:"text,omitempty"`
	ImageURL *classifierURL `json:"image_url,omitempty"`
}

type classifierURL struct {
	URL string `json:"url"`
}

// maxClassifierAnswer bounds the answer read from the classifier.
const maxClassifierAnswer = 1 << 20

// classify implements classifier.
func (h *httpClassifier) classify(ctx context.Context, c content) ([]string, error) {
	req := classifierRequest{Model: h.cfg.Model}
	if c.text != "" {
		req.Input = append(req.Input, classifierInput{Type: "text", Text: c.text})
	}
	if len(c.image) > 0 {
		ct := c.contentType
		if ct == "" {
			ct = http.DetectContentType(c.image)
		}
		req.Input = append(req.Input, classifierInput{Type: "image_url",
			ImageURL: &classifierURL{URL: "data:" + ct + ";base64," + base64.StdEncoding.EncodeToString(c.image)}})
	}
	if len(req.Input) == 0 {
		return nil, nil
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("gateway: moderation classifier: encode: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("gateway: moderation classifier: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	if h.cfg.Token != "" {
		hreq.Header.Set("Authorization", "Bearer "+h.cfg.Token)
	}
	resp, err := h.client.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("gateway: moderation classifier: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxClassifierAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("gateway: moderation classifier: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		// The body is not logged: it may quote the content.
		return nil, fmt.Errorf("gateway: moderation classifier answered %d", resp.StatusCode)
	}
	if len(raw) > maxClassifierAnswer {
		return nil, errors.New("gateway: moderation classifier: answer too large")
	}
	return parseClassifierAnswer(raw, h.known)
}

// classifierVerdict is one verdict in a classifier's answer.
type classifierVerdict struct {
	Flagged    *bool           `json:"flagged"`
	Categories map[string]bool `json:"categories"`
}

// parseClassifierAnswer reads a classifier's answer — one verdict, or
// OpenAI's {"results": [...]} — into the categories flagged. An answer
// without a verdict is an error, so a misconfigured URL answering {} does
// not pass everything.
func parseClassifierAnswer(raw []byte, known map[string]bool) ([]string, error) {
	var a struct {
		classifierVerdict
		Results []classifierVerdict `json:"results"`
	}
	if err := json.Unmarshal(raw, &a); err != nil {
		// Not wrapped: the decoder's message may quote the answer.
		return nil, errors.New("gateway: moderation classifier: malformed answer")
	}
	verdicts := a.Results
	if a.Flagged != nil {
		verdicts = append(verdicts, a.classifierVerdict)
	}
	if len(verdicts) == 0 {
		return nil, errors.New("gateway: moderation classifier: answer has no verdict")
	}
	var cats []string
	for _, v := range verdicts {
		if v.Flagged == nil {
			return nil, errors.New("gateway: moderation classifier: verdict without flagged")
		}
		named := false
		for name, on := range v.Categories {
			if !on {
				continue
			}
			named = true
			if c := canonicalCategory(name, known); !slices.Contains(cats, c) {
				cats = append(cats, c)
			}
		}
		if *v.Flagged && !named && !slices.Contains(cats, categoryUnspecified) {
			cats = append(cats, categoryUnspecified)
		}
	}
	slices.Sort(cats) // map order must not choose the category reported
	return cats, nil
}

// canonicalCategory reads a classifier's category name as imagegate's:
// lower case, separators as "_", a sub-category as the longest known
// category it starts with.
func canonicalCategory(name string, known map[string]bool) string {
	n := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '_'
	}, name)
	if len(n) > 40 {
		n = n[:40]
	}
	if known[n] {
		return n
	}
	best := ""
	for k := range known {
		if strings.HasPrefix(n, k+"_") && len(k) > len(best) {
			best = k
		}
	}
	if best != "" {
		return best
	}
	return n
}
