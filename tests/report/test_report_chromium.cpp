// End to end: a campaign run by real processes (init, local executor with workers; one
// task fails on purpose), the aggregation's files in their real formats, chain histories
// and a warm-start study; the report is produced by a separate process and rendered by
// headless Chromium, which must find every section and decode every embedded image.
// Skips (77) when Chromium is not installed.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <regex>

#include "core/base/atomic_file.hpp"
#include "core/base/process.hpp"
#include "core/plot/gnuplot.hpp"
#include "tests/report/campaign_fixture.hpp"

using namespace foldfarm::plot;

namespace fs = std::filesystem;
using namespace foldfarm;
using namespace foldfarm::report;
using namespace foldfarm::report::testing;

namespace {

std::string chromium() {
  for (const char* p : {"chromium", "chromium-browser", "google-chrome", "chrome"}) {
    std::string f = findProgram(p);
    if (!f.empty()) return f;
  }
  return "";
}

ProcessResult tool(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {FF_REPORT_TOOL};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessOptions po;
  po.timeout = std::chrono::seconds(60);
  return runProcess(argv, po);
}

ProcessResult chrome(const std::string& exe, const std::string& profile,
                     const std::vector<std::string>& extra, const std::string& url) {
  std::vector<std::string> argv = {exe,
                                   "--headless",
                                   "--no-sandbox",
                                   "--disable-gpu",
                                   "--disable-quic",
                                   "--no-first-run",
                                   "--disable-background-networking",
                                   "--disable-component-update",
                                   "--disable-sync",
                                   "--user-data-dir=" + profile,
                                   "--virtual-time-budget=5000"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.push_back(url);
  ProcessOptions po;
  po.timeout = std::chrono::seconds(60);
  return runProcess(argv, po);
}

bool contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

}  // namespace

TEST(ReportChromium, RealCampaignRendersWithEverySectionAndImage) {
  const std::string exe = chromium();
  if (exe.empty()) {
    std::fprintf(stderr, "chromium not found on PATH: skipped (apt-get install chromium)\n");
    std::exit(77);
  }
  ASSERT_TRUE(gnuplotAvailable()) << "gnuplot-nox is a required package (scripts/setup.sh)";
  ScratchDir scratch;
  const std::string dir = scratch.path() + "/camp";
  writeJson(scratch.path() + "/spec.json", commandSpec(4, 2, {"r0002m1"}));

  ProcessResult r = tool({"init", scratch.path() + "/spec.json", "--dir", dir});
  ASSERT_EQ(r.status(), 0) << r.err;
  r = tool({"run", dir, "--slots", "2"});
  ASSERT_EQ(r.status(), 1) << "one task fails on purpose: " << r.err;

  AggregateFixture fx = writeAggregate(dir + "/aggregate", 8, true);
  // One observable has the aggregation's own figure; the others are drawn by the report.
  {
    TempDir tmp;
    const std::string png = dir + "/aggregate/mass.png";
    writeFileAtomic(tmp.path() + "/f.gp", "set terminal pngcairo size 400,300\nset output " +
                                              gnuplotQuote(png) + "\nplot sin(x)\n");
    ASSERT_EQ(runProcess({"gnuplot", tmp.path() + "/f.gp"}).status(), 0);
  }
  for (const char* id : {"r0000m0", "r0000m1", "r0001m0", "r0003m1"})
    writeChainHistory(dir + "/tasks/" + id, 3, 0.7, id[4] == '3' ? 5 : 0);
  writeWarmstart(dir + "/warmstart");

  r = tool({"report", dir});
  ASSERT_EQ(r.status(), 0) << r.err;
  const std::string page = dir + "/report.html";
  ASSERT_TRUE(fs::exists(page));
  const std::string html = readFile(page);
  EXPECT_FALSE(contains(html, "<script"));
  EXPECT_FALSE(contains(html, "src=\"http"));
  EXPECT_FALSE(contains(html, "href=\"http"));

  // The decoding probe goes into a copy: the report itself carries no script.
  std::string probe = html;
  const std::string script =
      "<script>window.addEventListener('load',function(){var im=document.images,n=0;"
      "for(var i=0;i<im.length;i++)if(im[i].complete&&im[i].naturalWidth>0)n++;"
      "var p=document.createElement('p');p.id='img-check';p.setAttribute('data-decoded',n);"
      "p.setAttribute('data-total',im.length);document.body.appendChild(p);});</script>";
  probe.insert(probe.rfind("</body>"), script);
  const std::string probe_path = scratch.path() + "/probe.html";
  writeFileAtomic(probe_path, probe);

  r = chrome(exe, scratch.path() + "/profile1", {"--dump-dom"}, "file://" + probe_path);
  ASSERT_EQ(r.status(), 0) << r.err;
  const std::string dom = r.out;
  for (const char* id : {"overview", "distributions", "delta", "correlations", "weights",
                         "campaign", "throughput", "warmstart"})
    EXPECT_TRUE(contains(dom, std::string("<section id=\"") + id + "\">")) << id;
  EXPECT_FALSE(contains(dom, "class=\"omitted\""));
  for (const char* table : {"delta-table", "weights-table", "states-table", "accounting-table",
                            "failures-table", "reasons-table"})
    EXPECT_TRUE(contains(dom, std::string("<table id=\"") + table + "\"")) << table;
  // The journal's story: 7 tasks done, r0002m1 failed after 2 attempts with exit 1.
  EXPECT_TRUE(contains(dom, "<td>done</td><td>7</td>"));
  EXPECT_TRUE(contains(dom, "<td>failed</td><td>1</td>"));
  EXPECT_TRUE(contains(dom, "<td>r0002m1</td><td>failed</td><td>2</td><td>2</td><td>1</td>"));
  EXPECT_TRUE(contains(dom, "<td>attempts (dispatches)</td><td>9</td>"));
  std::smatch m;
  ASSERT_TRUE(
      std::regex_search(dom, m, std::regex("data-decoded=\"(\\d+)\" data-total=\"(\\d+)\"")))
      << "probe did not run";
  const int decoded = std::stoi(m[1]), total = std::stoi(m[2]);
  // 3 distributions + 3 correlation maps + throughput + warm-start curves.
  EXPECT_EQ(total, 8);
  EXPECT_EQ(decoded, total);

  const std::string shot = scratch.path() + "/report.png";
  r = chrome(exe, scratch.path() + "/profile2", {"--screenshot=" + shot, "--window-size=1200,3000"},
             "file://" + page);
  ASSERT_EQ(r.status(), 0) << r.err;
  ASSERT_TRUE(fs::exists(shot));
  EXPECT_GT(fs::file_size(shot), 50000u);
  if (const char* keep = std::getenv("FF_REPORT_KEEP")) {
    fs::copy_file(shot, std::string(keep) + "/report.png", fs::copy_options::overwrite_existing);
    fs::copy_file(page, std::string(keep) + "/report.html", fs::copy_options::overwrite_existing);
  }
}
