// Package release publishes verified artifacts as a GitHub release (github.com
// or GitHub Enterprise) with go-github: each binary with its provenance,
// report, statement, signature and SBOM, the packages that carry them, and
// a signed SHA256SUMS. It is idempotent: a re-run uploads only missing
// assets, checks existing ones by downloading and hashing them, never
// duplicates or replaces one, and publishes the draft only when every
// asset is in place. Without Publish it only prints the plan.
package release

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-github/v57/github"

	"github.com/nokmem/nokmem/internal/attest"
	"github.com/nokmem/nokmem/internal/dist"
	"github.com/nokmem/nokmem/internal/packaging"
	"github.com/nokmem/nokmem/internal/sbom"
)

// Asset is one file of the release.
type Asset struct {
	Name   string
	Path   string
	SHA256 string
}

// Plan is what a release will hold.
type Plan struct {
	Assets []Asset
	// Ignored lists the packages in dist/packages that are not uploaded,
	// each with the reason: only the package Build makes of a verified
	// artifact, holding that artifact's binary, is released.
	Ignored []string
	tmp     string
}

// Close removes the files NewPlan generated (SHA256SUMS and its
// signature); call it when the release is done, dry run or not.
func (p *Plan) Close() error {
	if p == nil || p.tmp == "" {
		return nil
	}
	return os.RemoveAll(p.tmp)
}

// SBOMDir holds the SBOM of every released artifact (dist/sbom/<asset>).
func SBOMDir(distRoot string) string { return filepath.Join(distRoot, "sbom") }

// NewPlan collects the assets of every verified artifact in distRoot: the
// binary, its provenance, report, statement and signature, its SBOM
// (written to dist/sbom/), its packages, and SHA256SUMS over all of them
// (signed with sign, if set). Any artifact that is not intact and
// verified stops the release; a package that does not carry a verified
// artifact is left out and named in Ignored.
func NewPlan(distRoot string, sign func([]byte) ([]byte, error)) (*Plan, error) {
	plan := &Plan{}
	var problems []string
	for _, project := range []string{"runc", "kubelet"} {
		versions, _ := os.ReadDir(filepath.Join(distRoot, project))
		for _, v := range versions {
			if !v.IsDir() {
				continue
			}
			dir, prov, err := packaging.Verified(distRoot, project, v.Name())
			if err != nil {
				problems = append(problems, err.Error())
				continue
			}
			// Named so that verify:dist can check a downloaded release.
			for _, name := range []string{project, dist.ProvenanceFile, dist.ReportFile, dist.StatementFile, dist.SignatureFile} {
				p := filepath.Join(dir, name)
				if _, err := os.Stat(p); err != nil && (name == dist.StatementFile || name == dist.SignatureFile) {
					continue // made before statements existed, or not signed
				}
				plan.Assets = append(plan.Assets, Asset{Name: attest.ReleaseAsset(project, v.Name(), name), Path: p})
			}
			bin := filepath.Join(dir, project)
			sum, err := dist.FileSHA256(bin)
			if err != nil {
				return nil, err
			}
			bom, err := sbom.Generate(bin, prov, sum)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", project, v.Name(), err)
			}
			name := attest.ReleaseAsset(project, v.Name(), sbom.File)
			p := filepath.Join(SBOMDir(distRoot), name)
			if err := dist.WriteFileAtomic(p, bom, 0o644); err != nil {
				return nil, err
			}
			plan.Assets = append(plan.Assets, Asset{Name: name, Path: p})
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("refusing to release:\n  %s", strings.Join(problems, "\n  "))
	}
	if len(plan.Assets) == 0 {
		return nil, fmt.Errorf("no verified artifacts in %s: run build:runc or build:kubelet first", distRoot)
	}
	arts, _ := packaging.LoadArtifacts(distRoot)
	pkgs, _ := filepath.Glob(filepath.Join(packaging.Dir(distRoot), "*"))
	for _, p := range pkgs {
		if !strings.HasSuffix(p, ".rpm") && !strings.HasSuffix(p, ".deb") {
			continue
		}
		if _, err := arts.Check(p); err != nil {
			plan.Ignored = append(plan.Ignored, err.Error())
			continue
		}
		plan.Assets = append(plan.Assets, Asset{Name: filepath.Base(p), Path: p})
	}
	var sums []string
	for i := range plan.Assets {
		s, err := dist.FileSHA256(plan.Assets[i].Path)
		if err != nil {
			return nil, err
		}
		plan.Assets[i].SHA256 = s
		sums = append(sums, s+"  "+plan.Assets[i].Name)
	}
	sort.Slice(sums, func(i, j int) bool { return sums[i][66:] < sums[j][66:] })
	sumData := []byte(strings.Join(sums, "\n") + "\n")
	var err error
	if plan.tmp, err = os.MkdirTemp("", "nokmem-release-"); err != nil {
		return nil, err
	}
	add := func(name string, data []byte) error {
		p := filepath.Join(plan.tmp, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return err
		}
		plan.Assets = append(plan.Assets, Asset{Name: name, Path: p, SHA256: dist.SHA256Hex(data)})
		return nil
	}
	if err := add("SHA256SUMS", sumData); err != nil {
		plan.Close()
		return nil, err
	}
	if sign != nil {
		sig, err := sign(sumData)
		if err != nil {
			plan.Close()
			return nil, fmt.Errorf("sign SHA256SUMS: %w", err)
		}
		if err := add("SHA256SUMS.asc", sig); err != nil {
			plan.Close()
			return nil, err
		}
	}
	return plan, nil
}

// Options configure a release.
type Options struct {
	Owner, Repo string
	Tag         string
	// BaseURL and UploadURL select GitHub Enterprise; empty means github.com.
	BaseURL, UploadURL string
	Token              string
	Publish            bool
	HTTPClient         *http.Client
	// Sleep waits before a retry (tests make it instant).
	Sleep func(time.Duration)
	Log   io.Writer
}

// Releaser talks to the GitHub API.
type Releaser struct {
	opt Options
	gh  *github.Client
}

// New makes a client for opt.
func New(opt Options) (*Releaser, error) {
	if opt.Owner == "" || opt.Repo == "" {
		return nil, errors.New("NOKMEM_GITHUB_REPO must be owner/name")
	}
	if opt.Token == "" && opt.Publish {
		return nil, errors.New("publishing needs a token in GITHUB_TOKEN")
	}
	gh := github.NewClient(opt.HTTPClient)
	if opt.Token != "" {
		gh = gh.WithAuthToken(opt.Token)
	}
	if opt.BaseURL != "" {
		upload := opt.UploadURL
		if upload == "" {
			upload = opt.BaseURL
		}
		var err error
		if gh, err = gh.WithEnterpriseURLs(opt.BaseURL, upload); err != nil {
			return nil, fmt.Errorf("GitHub URLs: %w", err)
		}
	}
	if opt.Sleep == nil {
		opt.Sleep = time.Sleep
	}
	return &Releaser{opt: opt, gh: gh}, nil
}

func (r *Releaser) logf(format string, a ...any) {
	if r.opt.Log != nil {
		fmt.Fprintf(r.opt.Log, format+"\n", a...)
	}
}

// retry runs f again after rate limits and transient server errors.
func (r *Releaser) retry(ctx context.Context, what string, f func() (*github.Response, error)) error {
	var err error
	for attempt := 1; attempt <= 5; attempt++ {
		var resp *github.Response
		resp, err = f()
		if err == nil {
			return nil
		}
		var rl *github.RateLimitError
		var abuse *github.AbuseRateLimitError
		var wait time.Duration
		switch {
		case errors.As(err, &rl):
			wait = time.Until(rl.Rate.Reset.Time)
		case errors.As(err, &abuse):
			wait = abuse.GetRetryAfter()
		case resp != nil && resp.StatusCode >= 500:
			wait = time.Duration(attempt) * time.Second
		default:
			return err
		}
		if wait < 0 {
			wait = 0
		}
		if wait > 15*time.Minute {
			return fmt.Errorf("%s: rate limited for %s: %w", what, wait, err)
		}
		r.logf("%s: %v; retrying in %s", what, err, wait.Round(time.Second))
		r.opt.Sleep(wait)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// findRelease returns the release of the tag, drafts included (the
// by-tag endpoint does not show drafts, so the list is searched too).
func (r *Releaser) findRelease(ctx context.Context) (*github.RepositoryRelease, error) {
	var rel *github.RepositoryRelease
	err := r.retry(ctx, "get release", func() (*github.Response, error) {
		var resp *github.Response
		var err error
		rel, resp, err = r.gh.Repositories.GetReleaseByTag(ctx, r.opt.Owner, r.opt.Repo, r.opt.Tag)
		if resp != nil && resp.StatusCode == http.StatusNotFound {
			rel = nil
			return resp, nil
		}
		return resp, err
	})
	if err != nil || rel != nil {
		return rel, err
	}
	opt := &github.ListOptions{PerPage: 100}
	for {
		var page []*github.RepositoryRelease
		var resp *github.Response
		err := r.retry(ctx, "list releases", func() (*github.Response, error) {
			var err error
			page, resp, err = r.gh.Repositories.ListReleases(ctx, r.opt.Owner, r.opt.Repo, opt)
			return resp, err
		})
		if err != nil {
			return nil, err
		}
		for _, p := range page {
			if p.GetTagName() == r.opt.Tag {
				return p, nil
			}
		}
		if resp.NextPage == 0 {
			return nil, nil
		}
		opt.Page = resp.NextPage
	}
}

func (r *Releaser) listAssets(ctx context.Context, id int64) (map[string]*github.ReleaseAsset, error) {
	out := map[string]*github.ReleaseAsset{}
	opt := &github.ListOptions{PerPage: 100}
	for {
		var page []*github.ReleaseAsset
		var resp *github.Response
		err := r.retry(ctx, "list assets", func() (*github.Response, error) {
			var err error
			page, resp, err = r.gh.Repositories.ListReleaseAssets(ctx, r.opt.Owner, r.opt.Repo, id, opt)
			return resp, err
		})
		if err != nil {
			return nil, err
		}
		for _, a := range page {
			out[a.GetName()] = a
		}
		if resp.NextPage == 0 {
			return out, nil
		}
		opt.Page = resp.NextPage
	}
}

func (r *Releaser) remoteSHA256(ctx context.Context, a *github.ReleaseAsset) (string, error) {
	var sum string
	err := r.retry(ctx, "download "+a.GetName(), func() (*github.Response, error) {
		rc, _, err := r.gh.Repositories.DownloadReleaseAsset(ctx, r.opt.Owner, r.opt.Repo, a.GetID(), r.followClient())
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		h := sha256.New()
		if _, err := io.Copy(h, rc); err != nil {
			return nil, err
		}
		sum = hex.EncodeToString(h.Sum(nil))
		return nil, nil
	})
	return sum, err
}

func (r *Releaser) followClient() *http.Client {
	if r.opt.HTTPClient != nil {
		return r.opt.HTTPClient
	}
	return http.DefaultClient
}

// Outcome says what Run did.
type Outcome struct {
	Uploaded, Present []string
	Published         bool
	DryRun            bool
}

// Run creates or completes the release with assets.
func (r *Releaser) Run(ctx context.Context, assets []Asset) (*Outcome, error) {
	out := &Outcome{}
	if !r.opt.Publish {
		out.DryRun = true
		r.logf("dry run (set NOKMEM_PUBLISH=1 to publish): release %s in %s/%s would hold:", r.opt.Tag, r.opt.Owner, r.opt.Repo)
		for _, a := range assets {
			r.logf("  %s  %s", a.SHA256, a.Name)
		}
		return out, nil
	}
	rel, err := r.findRelease(ctx)
	if err != nil {
		return nil, err
	}
	if rel == nil {
		err := r.retry(ctx, "create release", func() (*github.Response, error) {
			var resp *github.Response
			var err error
			rel, resp, err = r.gh.Repositories.CreateRelease(ctx, r.opt.Owner, r.opt.Repo, &github.RepositoryRelease{
				TagName: github.String(r.opt.Tag), Name: github.String("nokmem " + r.opt.Tag), Draft: github.Bool(true),
				Body: github.String("Verified nokmem builds: every binary comes with its provenance and verification report; SHA256SUMS covers all assets."),
			})
			return resp, err
		})
		if err != nil {
			return nil, err
		}
		r.logf("created draft release %s (id %d)", r.opt.Tag, rel.GetID())
	}
	existing, err := r.listAssets(ctx, rel.GetID())
	if err != nil {
		return nil, err
	}
	for _, a := range assets {
		if err := r.ensure(ctx, rel.GetID(), a, existing, out); err != nil {
			return out, err
		}
	}
	if rel.GetDraft() {
		err := r.retry(ctx, "publish release", func() (*github.Response, error) {
			var resp *github.Response
			var err error
			rel, resp, err = r.gh.Repositories.EditRelease(ctx, r.opt.Owner, r.opt.Repo, rel.GetID(), &github.RepositoryRelease{Draft: github.Bool(false)})
			return resp, err
		})
		if err != nil {
			return out, err
		}
		out.Published = true
		r.logf("published release %s", r.opt.Tag)
	}
	return out, nil
}

func (r *Releaser) ensure(ctx context.Context, id int64, a Asset, existing map[string]*github.ReleaseAsset, out *Outcome) error {
	if remote, ok := existing[a.Name]; ok {
		sum, err := r.remoteSHA256(ctx, remote)
		if err != nil {
			return err
		}
		if sum != a.SHA256 {
			return fmt.Errorf("asset %s already exists with sha256 %s, not %s; refusing to replace a published asset (delete it by hand if it is wrong)", a.Name, sum, a.SHA256)
		}
		out.Present = append(out.Present, a.Name)
		return nil
	}
	err := r.retry(ctx, "upload "+a.Name, func() (*github.Response, error) {
		f, err := os.Open(a.Path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		_, resp, err := r.gh.Repositories.UploadReleaseAsset(ctx, r.opt.Owner, r.opt.Repo, id, &github.UploadOptions{Name: a.Name}, f)
		return resp, err
	})
	var ghErr *github.ErrorResponse
	if errors.As(err, &ghErr) && ghErr.Response != nil && ghErr.Response.StatusCode == http.StatusUnprocessableEntity && isAlreadyExists(ghErr) {
		// Uploaded by a run that lost its answer: check it like any other.
		fresh, lerr := r.listAssets(ctx, id)
		if lerr != nil {
			return lerr
		}
		if remote, ok := fresh[a.Name]; ok {
			return r.ensure(ctx, id, a, map[string]*github.ReleaseAsset{a.Name: remote}, out)
		}
	}
	if err != nil {
		return err
	}
	r.logf("uploaded %s", a.Name)
	out.Uploaded = append(out.Uploaded, a.Name)
	return nil
}

func isAlreadyExists(e *github.ErrorResponse) bool {
	for _, x := range e.Errors {
		if x.Code == "already_exists" {
			return true
		}
	}
	return false
}
