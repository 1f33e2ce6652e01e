package release

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-github/v57/github"

	"github.com/nokmem/nokmem/internal/dist"
)

// fakeGitHub enforces the parts of the REST API a release uses: drafts are
// invisible by tag, duplicate asset names get 422 already_exists, lists are
// paginated with Link headers, uploads go to the upload host, and rate
// limits answer 403 with X-RateLimit-Remaining: 0.
type fakeGitHub struct {
	mu          sync.Mutex
	t           *testing.T
	srv         *httptest.Server
	releases    []*fakeRelease
	nextID      int64
	uploads     int
	failUpload  map[int]bool // upload attempt numbers that lose the connection
	rateLimited int          // the next N requests are rate limited
	requests    int
}

type fakeRelease struct {
	ID     int64
	Tag    string
	Draft  bool
	Assets []*fakeAsset
}

type fakeAsset struct {
	ID   int64
	Name string
	Data []byte
}

const perPage = 2

func newFake(t *testing.T) *fakeGitHub {
	f := &fakeGitHub{t: t, nextID: 1, failUpload: map[int]bool{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeGitHub) releaseJSON(r *fakeRelease) map[string]any {
	return map[string]any{"id": r.ID, "tag_name": r.Tag, "draft": r.Draft,
		"upload_url": fmt.Sprintf("%s/api/uploads/repos/o/r/releases/%d/assets{?name,label}", f.srv.URL, r.ID)}
}

func page[T any](w http.ResponseWriter, req *http.Request, items []T) []T {
	p, _ := strconv.Atoi(req.URL.Query().Get("page"))
	if p < 1 {
		p = 1
	}
	start := (p - 1) * perPage
	if start > len(items) {
		start = len(items)
	}
	end := start + perPage
	if end >= len(items) {
		end = len(items)
	} else {
		u := *req.URL
		q := u.Query()
		q.Set("page", strconv.Itoa(p+1))
		u.RawQuery = q.Encode()
		w.Header().Set("Link", fmt.Sprintf(`<http://%s%s>; rel="next"`, req.Host, u.String()))
	}
	return items[start:end]
}

func (f *fakeGitHub) serve(w http.ResponseWriter, req *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	if !strings.HasPrefix(req.Header.Get("Authorization"), "Bearer tok") {
		http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
		return
	}
	if f.rateLimited > 0 {
		f.rateLimited--
		w.Header().Set("X-RateLimit-Limit", "60")
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(-time.Second).Unix(), 10))
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"message":"API rate limit exceeded"}`)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	path := req.URL.Path
	enc := json.NewEncoder(w)
	switch {
	case req.Method == "GET" && strings.HasPrefix(path, "/api/v3/repos/o/r/releases/tags/"):
		tag := strings.TrimPrefix(path, "/api/v3/repos/o/r/releases/tags/")
		for _, r := range f.releases {
			if r.Tag == tag && !r.Draft {
				enc.Encode(f.releaseJSON(r))
				return
			}
		}
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"message":"Not Found"}`)
	case req.Method == "GET" && path == "/api/v3/repos/o/r/releases":
		out := []map[string]any{}
		for _, r := range page(w, req, f.releases) {
			out = append(out, f.releaseJSON(r))
		}
		enc.Encode(out)
	case req.Method == "POST" && path == "/api/v3/repos/o/r/releases":
		var body struct {
			TagName string `json:"tag_name"`
			Draft   bool   `json:"draft"`
		}
		json.NewDecoder(req.Body).Decode(&body)
		r := &fakeRelease{ID: f.nextID, Tag: body.TagName, Draft: body.Draft}
		f.nextID++
		f.releases = append(f.releases, r)
		w.WriteHeader(http.StatusCreated)
		enc.Encode(f.releaseJSON(r))
	case req.Method == "GET" && strings.HasPrefix(path, "/api/v3/repos/o/r/releases/assets/"):
		id, _ := strconv.ParseInt(strings.TrimPrefix(path, "/api/v3/repos/o/r/releases/assets/"), 10, 64)
		if req.Header.Get("Accept") != "application/octet-stream" {
			f.t.Errorf("asset download without Accept: application/octet-stream")
		}
		for _, r := range f.releases {
			for _, a := range r.Assets {
				if a.ID == id {
					w.Header().Set("Content-Type", "application/octet-stream")
					w.Write(a.Data)
					return
				}
			}
		}
		w.WriteHeader(http.StatusNotFound)
	case req.Method == "PATCH" && strings.HasPrefix(path, "/api/v3/repos/o/r/releases/"):
		r := f.release(strings.TrimPrefix(path, "/api/v3/repos/o/r/releases/"))
		var body struct {
			Draft *bool `json:"draft"`
		}
		json.NewDecoder(req.Body).Decode(&body)
		if body.Draft != nil {
			r.Draft = *body.Draft
		}
		enc.Encode(f.releaseJSON(r))
	case req.Method == "GET" && strings.HasPrefix(path, "/api/v3/") && strings.HasSuffix(path, "/assets"):
		r := f.release(strings.TrimSuffix(strings.TrimPrefix(path, "/api/v3/repos/o/r/releases/"), "/assets"))
		out := []map[string]any{}
		for _, a := range page(w, req, r.Assets) {
			out = append(out, map[string]any{"id": a.ID, "name": a.Name, "size": len(a.Data)})
		}
		enc.Encode(out)
	case req.Method == "POST" && strings.HasPrefix(path, "/api/uploads/repos/o/r/releases/"):
		f.uploads++
		if f.failUpload[f.uploads] {
			hj, _ := w.(http.Hijacker)
			conn, _, _ := hj.Hijack()
			conn.Close()
			return
		}
		r := f.release(strings.TrimSuffix(strings.TrimPrefix(path, "/api/uploads/repos/o/r/releases/"), "/assets"))
		name := req.URL.Query().Get("name")
		data, _ := io.ReadAll(req.Body)
		for _, a := range r.Assets {
			if a.Name == name {
				w.WriteHeader(http.StatusUnprocessableEntity)
				io.WriteString(w, `{"message":"Validation Failed","errors":[{"resource":"ReleaseAsset","code":"already_exists","field":"name"}]}`)
				return
			}
		}
		a := &fakeAsset{ID: 1000 + int64(f.uploads), Name: name, Data: data}
		r.Assets = append(r.Assets, a)
		w.WriteHeader(http.StatusCreated)
		enc.Encode(map[string]any{"id": a.ID, "name": a.Name})
	default:
		f.t.Errorf("unexpected %s %s", req.Method, path)
		w.WriteHeader(http.StatusNotFound)
	}
}

func (f *fakeGitHub) release(id string) *fakeRelease {
	n, _ := strconv.ParseInt(id, 10, 64)
	for _, r := range f.releases {
		if r.ID == n {
			return r
		}
	}
	f.t.Errorf("no release %s", id)
	return &fakeRelease{}
}

// verifiedDist writes a dist/ with two verified runc artifacts.
func verifiedDist(t *testing.T) string {
	d := t.TempDir()
	for _, v := range []string{"v1.0.0-rc5", "v1.0.0-rc9"} {
		dir := dist.Dir(d, "runc", v)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "runc"), []byte("runc "+v), 0o755)
		os.WriteFile(filepath.Join(dir, dist.ReportFile), []byte(`{"passed": true, "verdict": "nokmem", "target": {"target": "el7", "ok": true, "linkage": "static"}}`), 0o644)
		b, _ := json.Marshal(dist.Provenance{Project: "runc", Version: v, Verified: dist.VerifiedInfo{Passed: true}})
		os.WriteFile(filepath.Join(dir, dist.ProvenanceFile), b, 0o644)
		if err := dist.WriteSums(dir); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func releaser(t *testing.T, f *fakeGitHub, sleeps *int) *Releaser {
	r, err := New(Options{Owner: "o", Repo: "r", Tag: "v2026.11.22", BaseURL: f.srv.URL + "/api/v3/", UploadURL: f.srv.URL + "/api/uploads/",
		Token: "tok", Publish: true, Sleep: func(time.Duration) { *sleeps++ }})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func names(r *fakeRelease) []string {
	var n []string
	for _, a := range r.Assets {
		n = append(n, a.Name)
	}
	sort.Strings(n)
	return n
}

const wantAssets = "SHA256SUMS runc-nokmem-v1.0.0-rc5-linux-amd64 runc-nokmem-v1.0.0-rc5.provenance.json runc-nokmem-v1.0.0-rc5.sbom.cdx.json runc-nokmem-v1.0.0-rc5.verify.json runc-nokmem-v1.0.0-rc9-linux-amd64 runc-nokmem-v1.0.0-rc9.provenance.json runc-nokmem-v1.0.0-rc9.sbom.cdx.json runc-nokmem-v1.0.0-rc9.verify.json"

// plan is NewPlan whose generated files are removed when the test ends.
func plan(t *testing.T, distRoot string) ([]Asset, error) {
	t.Helper()
	p, err := NewPlan(distRoot, nil)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { p.Close() })
	return p.Assets, nil
}

func TestReleaseTwiceWithoutDuplicates(t *testing.T) {
	f := newFake(t)
	assets, err := plan(t, verifiedDist(t))
	if err != nil {
		t.Fatal(err)
	}
	sleeps := 0
	f.rateLimited = 1
	out, err := releaser(t, f, &sleeps).Run(context.Background(), assets)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Uploaded) != 9 || !out.Published || sleeps != 1 {
		t.Fatalf("first run: %+v sleeps=%d", out, sleeps)
	}
	out, err = releaser(t, f, &sleeps).Run(context.Background(), assets)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Uploaded) != 0 || len(out.Present) != 9 || out.Published {
		t.Fatalf("second run: %+v", out)
	}
	if len(f.releases) != 1 || f.releases[0].Draft || strings.Join(names(f.releases[0]), " ") != wantAssets {
		t.Fatalf("release state: %d releases, draft=%v, assets %v", len(f.releases), f.releases[0].Draft, names(f.releases[0]))
	}
	var sums string
	for _, a := range f.releases[0].Assets {
		if a.Name == "SHA256SUMS" {
			sums = string(a.Data)
		}
	}
	if strings.Count(sums, "\n") != 8 {
		t.Errorf("SHA256SUMS:\n%s", sums)
	}
}

func TestNetworkErrorMidwayThenRerunCompletes(t *testing.T) {
	f := newFake(t)
	f.failUpload[3] = true
	assets, _ := plan(t, verifiedDist(t))
	sleeps := 0
	if _, err := releaser(t, f, &sleeps).Run(context.Background(), assets); err == nil {
		t.Fatal("lost connection not reported")
	}
	if len(f.releases) != 1 || !f.releases[0].Draft || len(f.releases[0].Assets) != 2 {
		t.Fatalf("after the failure: draft=%v assets=%v", f.releases[0].Draft, names(f.releases[0]))
	}
	// The draft is invisible by tag; the re-run must find it, not make a second one.
	out, err := releaser(t, f, &sleeps).Run(context.Background(), assets)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.releases) != 1 || f.releases[0].Draft || !out.Published || len(out.Uploaded) != 7 || len(out.Present) != 2 {
		t.Fatalf("re-run: %+v, %d releases", out, len(f.releases))
	}
	if strings.Join(names(f.releases[0]), " ") != wantAssets {
		t.Fatalf("assets %v", names(f.releases[0]))
	}
}

func TestExistingAssetWithOtherBytesIsRefused(t *testing.T) {
	f := newFake(t)
	assets, _ := plan(t, verifiedDist(t))
	f.releases = []*fakeRelease{{ID: 1, Tag: "v2026.11.22", Draft: true, Assets: []*fakeAsset{{ID: 7, Name: "SHA256SUMS", Data: []byte("other")}}}}
	f.nextID = 2
	_, err := releaser(t, f, new(int)).Run(context.Background(), assets)
	if err == nil || !strings.Contains(err.Error(), "refusing to replace") {
		t.Fatalf("got %v", err)
	}
	if !f.releases[0].Draft {
		t.Fatal("published with a wrong asset")
	}
}

func TestAlreadyExistsAfterLostAnswerIsChecked(t *testing.T) {
	f := newFake(t)
	assets, _ := plan(t, verifiedDist(t))
	// The asset is there (uploaded by a run whose answer was lost), but the
	// listing made before uploading did not show it: the 422 is resolved
	// by checking the asset, not by uploading a duplicate.
	r := &fakeRelease{ID: 1, Tag: "v2026.11.22", Draft: true}
	f.releases, f.nextID = []*fakeRelease{r}, 2
	data, _ := os.ReadFile(assets[0].Path)
	r.Assets = append(r.Assets, &fakeAsset{ID: 99, Name: assets[0].Name, Data: data})
	out := &Outcome{}
	if err := releaser(t, f, new(int)).ensure(context.Background(), 1, assets[0], map[string]*github.ReleaseAsset{}, out); err != nil {
		t.Fatal(err)
	}
	if len(out.Present) != 1 || len(r.Assets) != 1 {
		t.Fatalf("outcome %+v, assets %v", out, names(r))
	}
}

func TestDryRunAndRefusals(t *testing.T) {
	f := newFake(t)
	assets, _ := plan(t, verifiedDist(t))
	r, _ := New(Options{Owner: "o", Repo: "r", Tag: "v1", BaseURL: f.srv.URL + "/api/v3/"})
	out, err := r.Run(context.Background(), assets)
	if err != nil || !out.DryRun || f.requests != 0 {
		t.Fatalf("dry run: %+v %v, %d requests", out, err, f.requests)
	}
	if _, err := New(Options{Owner: "o", Repo: "r", Publish: true}); err == nil {
		t.Error("publishing without a token accepted")
	}
	d := verifiedDist(t)
	rep := filepath.Join(d, "runc", "v1.0.0-rc9", dist.ReportFile)
	os.WriteFile(rep, []byte(`{"passed": false}`), 0o644)
	dist.WriteSums(filepath.Dir(rep))
	if _, err := NewPlan(d, nil); err == nil || !strings.Contains(err.Error(), "without a passing verification report") {
		t.Fatalf("unverified artifact: %v", err)
	}
	if _, err := NewPlan(t.TempDir(), nil); err == nil {
		t.Fatal("empty dist accepted")
	}
}

// The in-toto statement and its signature travel with the artifact, under
// the names verify:dist looks for in a downloaded release.
func TestPlanCarriesTheStatementAndSignature(t *testing.T) {
	d := verifiedDist(t)
	dir := dist.Dir(d, "runc", "v1.0.0-rc9")
	os.WriteFile(filepath.Join(dir, dist.StatementFile), []byte(`{"_type":"https://in-toto.io/Statement/v1"}`), 0o644)
	os.WriteFile(filepath.Join(dir, dist.SignatureFile), []byte("sig"), 0o644)
	dist.WriteSums(dir)
	assets, err := plan(t, d)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range assets {
		names = append(names, a.Name)
	}
	got := strings.Join(names, " ")
	for _, want := range []string{"runc-nokmem-v1.0.0-rc9.intoto.json", "runc-nokmem-v1.0.0-rc9.intoto.json.asc", "runc-nokmem-v1.0.0-rc9-linux-amd64"} {
		if !strings.Contains(got, want+" ") && !strings.HasSuffix(got, want) {
			t.Errorf("assets lack %s: %s", want, got)
		}
	}
	if strings.Contains(got, "runc-nokmem-v1.0.0-rc5.intoto.json") {
		t.Errorf("a statement was invented for rc5: %s", got)
	}
}
