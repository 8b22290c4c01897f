package k8s_test

import (
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/quantstream/quantstream/internal/clitest"
)

// The parts of the Kubernetes objects the examples use. Unknown fields are ignored:
// this is not a schema check, it checks what decides whether the job does the right
// thing.
type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		// Job
		CompletionMode string `yaml:"completionMode"`
		Completions    *int   `yaml:"completions"`
		Parallelism    *int   `yaml:"parallelism"`
		Template       struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
		// PersistentVolumeClaim
		AccessModes []string `yaml:"accessModes"`
	} `yaml:"spec"`
	file string
}

type podSpec struct {
	RestartPolicy  string      `yaml:"restartPolicy"`
	InitContainers []container `yaml:"initContainers"`
	Containers     []container `yaml:"containers"`
	Volumes        []struct {
		Name                  string `yaml:"name"`
		PersistentVolumeClaim *struct {
			ClaimName string `yaml:"claimName"`
		} `yaml:"persistentVolumeClaim"`
	} `yaml:"volumes"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

// run is one container's quantstream invocation.
type run struct {
	job    *object
	c      container
	inv    clitest.Invocation
	claims map[string]string // mount path → PVC claim name
}

// TestManifests parses every manifest of this directory and checks that the Jobs run
// the quantstream CLI with commands and flags that exist (read from the built binary's
// help), that the Indexed Job's --shard covers exactly its completions, and that the
// convert and merge Jobs work on the same output on a shared ReadWriteMany volume.
func TestManifests(t *testing.T) {
	objs := readManifests(t, ".")
	cli, err := clitest.Load(clitest.Build(t))
	if err != nil {
		t.Fatal(err)
	}

	pvcs := map[string]*object{}
	var runs []run
	for _, o := range objs {
		switch o.Kind {
		case "PersistentVolumeClaim":
			pvcs[o.Metadata.Name] = o
		case "Job":
			runs = append(runs, jobRuns(t, cli, o)...)
		default:
			t.Errorf("%s: kind %q: want Job or PersistentVolumeClaim", o.file, o.Kind)
		}
	}

	var converts, merges []run
	for _, r := range runs {
		switch r.inv.Command {
		case "convert":
			converts = append(converts, r)
		case "merge":
			merges = append(merges, r)
		default:
			t.Errorf("job %s runs quantstream %s: want convert or merge", r.job.Metadata.Name, r.inv.Command)
		}
		// Every path the CLI reads or writes is on a shared volume defined here.
		for _, flag := range []string{"in", "out", "report", "recipe"} {
			for _, p := range r.inv.Flags[flag] {
				if flag == "recipe" && !strings.Contains(p, "/") {
					continue // a preset name, not a file
				}
				claim := claimFor(r.claims, p)
				switch pvc := pvcs[claim]; {
				case claim == "":
					t.Errorf("job %s: --%s %s is on no mounted PersistentVolumeClaim: the pod's own disk is not shared", r.job.Metadata.Name, flag, p)
				case pvc == nil:
					t.Errorf("job %s: --%s %s is on claim %q, which no manifest here defines", r.job.Metadata.Name, flag, p, claim)
				case !slices.Contains(pvc.Spec.AccessModes, "ReadWriteMany"):
					t.Errorf("job %s: claim %q has access modes %v: pods of an Indexed Job on several nodes need ReadWriteMany", r.job.Metadata.Name, claim, pvc.Spec.AccessModes)
				}
			}
		}
	}
	if len(converts) != 1 || len(merges) != 1 {
		t.Fatalf("want one convert and one merge container, got %d and %d", len(converts), len(merges))
	}
	conv, merge := converts[0], merges[0]

	// The Indexed Job: pod i converts share i of completions.
	j := conv.job
	if j.Spec.CompletionMode != "Indexed" {
		t.Errorf("job %s runs convert with completionMode %q: want Indexed (JOB_COMPLETION_INDEX → --shard)", j.Metadata.Name, j.Spec.CompletionMode)
	}
	if j.Spec.Completions == nil || *j.Spec.Completions < 1 {
		t.Fatalf("job %s: completions must be set (the number of shares)", j.Metadata.Name)
	}
	n := *j.Spec.Completions
	if p := j.Spec.Parallelism; p != nil && (*p < 1 || *p > n) {
		t.Errorf("job %s: parallelism %d: want 1..completions (%d)", j.Metadata.Name, *p, n)
	}
	shard := conv.inv.Value("shard")
	if want := "$(JOB_COMPLETION_INDEX)/" + strconv.Itoa(n); shard != want {
		t.Errorf("job %s: --shard %q, want %q: every index converts its own share of completions=%d", j.Metadata.Name, shard, want, n)
	}
	if merge.job.Spec.CompletionMode == "Indexed" || merge.inv.Value("shard") != "" {
		t.Errorf("job %s: the merge runs once, not per index", merge.job.Metadata.Name)
	}
	if o := conv.inv.Value("out"); o == "" || path.Clean(o) != path.Clean(merge.inv.Value("out")) {
		t.Errorf("convert --out %q, merge --out %q: want the same directory", o, merge.inv.Value("out"))
	}
	if claimFor(conv.claims, conv.inv.Value("out")) != claimFor(merge.claims, merge.inv.Value("out")) {
		t.Errorf("convert and merge see --out on different claims")
	}
}

// readManifests decodes every document of every .yaml file in dir.
func readManifests(t *testing.T, dir string) []*object {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s (%v)", dir, err)
	}
	var objs []*object
	for _, f := range files {
		r, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(r)
		for {
			o := &object{file: f}
			err := dec.Decode(o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Errorf("%s: a document without apiVersion, kind or metadata.name", f)
				continue
			}
			objs = append(objs, o)
		}
		r.Close()
	}
	return objs
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// jobRuns checks every container of job o: it runs quantstream directly (so that its
// command line can be checked), every $(VAR) it uses is defined (Kubernetes leaves an
// undefined one as literal text), and the CLI accepts the command and flags.
func jobRuns(t *testing.T, cli *clitest.CLI, o *object) []run {
	t.Helper()
	name := o.Metadata.Name
	pod := o.Spec.Template.Spec
	if pod.RestartPolicy != "Never" && pod.RestartPolicy != "OnFailure" {
		t.Errorf("job %s: restartPolicy %q: a Job needs Never or OnFailure", name, pod.RestartPolicy)
	}
	volumes := map[string]string{} // volume name → claim
	for _, v := range pod.Volumes {
		if v.PersistentVolumeClaim != nil {
			volumes[v.Name] = v.PersistentVolumeClaim.ClaimName
		}
	}
	var runs []run
	for _, c := range append(pod.InitContainers, pod.Containers...) {
		argv := append(append([]string{}, c.Command...), c.Args...)
		if len(argv) == 0 || path.Base(argv[0]) != "quantstream" {
			t.Errorf("job %s container %s runs %q: want the quantstream binary itself (no shell around it), so that its flags can be checked", name, c.Name, argv)
			continue
		}
		defined := map[string]bool{}
		for _, e := range c.Env {
			defined[e.Name] = true
		}
		if o.Spec.CompletionMode == "Indexed" {
			defined["JOB_COMPLETION_INDEX"] = true // set by the Job controller
		}
		for _, a := range argv {
			for _, m := range envRef.FindAllStringSubmatch(a, -1) {
				if !defined[m[1]] {
					t.Errorf("job %s container %s: %q uses $(%s), which is not defined for it: Kubernetes would pass it literally", name, c.Name, a, m[1])
				}
			}
		}
		inv, problems, pending := cli.Check(argv[1:])
		for _, p := range problems {
			t.Errorf("job %s container %s (%s): %s", name, c.Name, o.file, p)
		}
		for _, p := range pending {
			t.Logf("job %s container %s: pending: %s", name, c.Name, p)
		}
		claims := map[string]string{}
		for _, m := range c.VolumeMounts {
			if claim, ok := volumes[m.Name]; ok {
				claims[m.MountPath] = claim
			}
		}
		runs = append(runs, run{job: o, c: c, inv: inv, claims: claims})
	}
	return runs
}

// claimFor is the claim mounted at the longest mount path holding p ("" if none).
func claimFor(claims map[string]string, p string) string {
	best, claim := "", ""
	p = path.Clean(p)
	for mount, c := range claims {
		m := path.Clean(mount)
		if (p == m || strings.HasPrefix(p, m+"/")) && len(m) > len(best) {
			best, claim = m, c
		}
	}
	return claim
}
