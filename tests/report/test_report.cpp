// The campaign report read from real file formats: sections present or omitted with a
// note, the Δ table from summary.json, and bad input refused with nothing written.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/base/atomic_file.hpp"
#include "core/base/error.hpp"
#include "core/build_info/build_info.hpp"
#include "core/plot/gnuplot.hpp"
#include "jobs/campaign.hpp"
#include "jobs/campaign_commands.hpp"
#include "jobs/journal.hpp"
#include "jobs/task_kind.hpp"
#include "report/bands_file.hpp"
#include "report/base64.hpp"
#include "report/campaign_report.hpp"
#include "report/campaign_stats.hpp"
#include "report/html.hpp"
#include "tests/report/campaign_fixture.hpp"

using namespace foldfarm::plot;

namespace fs = std::filesystem;
using namespace foldfarm;
using namespace foldfarm::report;
using namespace foldfarm::report::testing;

namespace {

// An initialised (never run) campaign of 3 x 2 command tasks in scratch/camp.
std::string initCampaign(const ScratchDir& scratch) {
  jobs::registerBuiltinTaskKinds();
  const std::string spec = scratch.path() + "/spec.json";
  writeJson(spec, commandSpec(3, 2, {}));
  const std::string dir = scratch.path() + "/camp";
  jobs::initCommand(spec, dir);
  return dir;
}

bool contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

}  // namespace

TEST(Base64, EncodesRfc4648Vectors) {
  EXPECT_EQ(base64Encode(""), "");
  EXPECT_EQ(base64Encode("f"), "Zg==");
  EXPECT_EQ(base64Encode("fo"), "Zm8=");
  EXPECT_EQ(base64Encode("foo"), "Zm9v");
  EXPECT_EQ(base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64Encode(std::string("\xff\x00\x10", 3)), "/wAQ");
}

TEST(Html, EscapesMarkupInTextAndAttributes) {
  EXPECT_EQ(htmlEscape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
  const std::string t = htmlTable({"task"}, {{"<script>"}}, "t");
  EXPECT_TRUE(contains(t, "&lt;script&gt;"));
  EXPECT_FALSE(contains(t, "<script>"));
}

TEST(BandsFile, ReadsTheAggregationLayoutInSpecOrder) {
  ScratchDir scratch;
  writeAggregate(scratch.path() + "/agg", 6, true);
  BandsFile b = readBandsFile(scratch.path() + "/agg/bands.h5");
  EXPECT_EQ(b.replicas, 6);
  EXPECT_EQ(b.chains, 12);
  ASSERT_EQ(b.observables.size(), 3u);
  EXPECT_EQ(b.observables[0].name, "mass");
  EXPECT_EQ(b.observables[1].name, "width");
  EXPECT_EQ(b.observables[2].name, "multiplicity");
  EXPECT_EQ(b.observables[0].bins(), 49u);
  EXPECT_EQ(b.observables[2].bins(), 79u);
  EXPECT_EQ(b.observables[0].correlation.size(), 49u * 49u);
  EXPECT_EQ(b.observables[0].truth.size(), 49u);
  for (size_t i = 0; i < 49; ++i)
    EXPECT_NEAR(b.observables[0].correlation[i * 49 + i], b.observables[0].std[i] > 0 ? 1.0 : 0.0,
                1e-9);
}

// The truth's error and the total band are read where present, and left empty in a file
// written before them.
TEST(BandsFile, ReadsTheTruthErrorAndTheTotalBandWherePresent) {
  ScratchDir scratch;
  writeAggregate(scratch.path() + "/agg", 6, true);
  const std::string p = scratch.path() + "/agg/bands.h5";
  BandsFile b = readBandsFile(p);
  EXPECT_EQ(b.band_replicas, 5);
  const ObservableBands& mass = b.observables[0];
  ASSERT_EQ(mass.truth_std.size(), mass.bins());
  ASSERT_EQ(mass.std_total.size(), mass.bins());
  EXPECT_EQ(mass.std_total, mass.std);
  for (size_t i = 0; i < mass.bins(); ++i) {
    EXPECT_GE(mass.truth_std[i], 0) << i;
    if (mass.truth[i] > 0) {
      EXPECT_GT(mass.truth_std[i], 0) << i;
    }
  }
  removeBandsDataset(p, "mass/truth_std");
  removeBandsDataset(p, "mass/std_total");
  b = readBandsFile(p);
  EXPECT_TRUE(b.observables[0].truth_std.empty());
  EXPECT_TRUE(b.observables[0].std_total.empty());
  EXPECT_EQ(b.observables[1].truth_std.size(), b.observables[1].bins());
  // A damaged value is refused, naming the dataset.
  setBandsValue(p, "width/truth_std", 0, std::nan(""));
  try {
    readBandsFile(p);
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    EXPECT_TRUE(contains(e.what(), p + ": dataset width/truth_std holds NaN at index 0"))
        << e.what();
  }
}

// The report's own band figure (drawn where the aggregation drew none): the bands over
// band_replicas (before: the title gave every replica's count), replica 0 among them only
// when they are every replica, the total band where variations widen it, the truth's error.
TEST(BandsFile, TheReportsBandFigureIsOverTheBandReplicasWithTheTotalAndTheTruthError) {
  ScratchDir scratch;
  const std::string agg = scratch.path() + "/agg";
  AggregateFixture fx = writeAggregate(agg, 6, true);
  BandsFile b = readBandsFile(agg + "/bands.h5");
  const ObservableBands& mass = b.observables[0];
  BandPlot bp = bandFigure(b, mass);
  EXPECT_EQ(bp.replicas, 5);
  EXPECT_FALSE(bp.replica_0_in_band);
  EXPECT_EQ(bp.title, "mass");
  EXPECT_EQ(bp.nominal, mass.nominal);
  EXPECT_EQ(bp.truth, mass.truth);
  EXPECT_EQ(bp.truth_sigma, mass.truth_std);
  EXPECT_EQ(bp.p97_5, mass.p97_5);
  // No variations: std_total is std, and no total band is drawn (as the aggregation's).
  EXPECT_TRUE(bp.total_sigma.empty());
  addVariations(agg, fx);
  b = readBandsFile(agg + "/bands.h5");
  bp = bandFigure(b, b.observables[0]);
  ASSERT_EQ(bp.total_sigma.size(), b.observables[0].bins());
  EXPECT_EQ(bp.total_sigma, b.observables[0].std_total);
  EXPECT_NE(bp.total_sigma, b.observables[0].std);
  // Two replicas: the band is over both, replica 0 among them.
  writeAggregate(scratch.path() + "/two", 2, false);
  const BandsFile two = readBandsFile(scratch.path() + "/two/bands.h5");
  bp = bandFigure(two, two.observables[0]);
  EXPECT_EQ(bp.replicas, 2);
  EXPECT_TRUE(bp.replica_0_in_band);
  EXPECT_TRUE(bp.truth.empty());
  EXPECT_TRUE(bp.truth_sigma.empty());
}

// A bin without variance has no correlation: NaN (drawn grey), not the 0 of bands.h5 (drawn
// white, "uncorrelated"); the title says what the correlation is over.
TEST(BandsFile, TheCorrelationFigureLeavesBinsWithoutVarianceUndefined) {
  ScratchDir scratch;
  writeAggregate(scratch.path() + "/agg", 6, true);
  const BandsFile b = readBandsFile(scratch.path() + "/agg/bands.h5");
  const ObservableBands& mass = b.observables[0];
  const Heatmap hm = correlationFigure(b, mass);
  EXPECT_EQ(hm.title, "mass: stat. correlation (data bootstrap, 5 replicas; grey: empty bins)");
  EXPECT_EQ(hm.zlabel, "correlation coefficient");
  const size_t nb = mass.bins();
  ASSERT_EQ(hm.values.size(), nb * nb);
  size_t empty = 0;
  for (size_t i = 0; i < nb; ++i) {
    empty += mass.std[i] > 0 ? 0 : 1;
    for (size_t j = 0; j < nb; ++j) {
      if (mass.std[i] > 0 && mass.std[j] > 0)
        EXPECT_EQ(hm.values[i * nb + j], mass.correlation[i * nb + j]) << i << "," << j;
      else
        EXPECT_TRUE(std::isnan(hm.values[i * nb + j])) << i << "," << j;
    }
  }
  ASSERT_GT(empty, 0u) << "the fixture's mass tail is empty in every replica";
  ASSERT_LT(empty, nb);
}

// The band figure's script: the legend says what each band is, the 95% band from 20 replicas
// on (said in the title below that), headroom above the highest curve, the truth as points
// with its error, and a ratio panel to the unfolded whose range comes from the data.
TEST(Gnuplot, TheBandFigureSaysWhatItsBandsAreAndFitsItsRanges) {
  BandPlot bp;
  bp.title = "mass";
  bp.xlabel = "jet mass [GeV]";
  bp.edges = {0, 1, 2, 3};
  bp.nominal = {0.2, 0.5, 0.3};
  for (double n : bp.nominal) {
    bp.p16.push_back(0.9 * n);
    bp.p84.push_back(1.1 * n);
    bp.p2_5.push_back(0.8 * n);
    bp.p97_5.push_back(1.2 * n);
  }
  bp.prior = {0.3, 0.4, 0.3};
  bp.truth = {0.25, 0.45, 0.3};
  bp.truth_sigma = {0.05, 0.2, 0.05};
  bp.total_sigma = {0.01, 0.05, 0.01};
  bp.replicas = 12;
  GnuplotBatch batch;
  batch.add("few", bp);
  const std::string few = batch.script();
  EXPECT_TRUE(contains(few, "'mass (12 bootstrap replicas; 95% band left out: < 20 replicas)'"))
      << few;
  EXPECT_TRUE(contains(few, "title 'stat. 68% (data bootstrap)'")) << few;
  EXPECT_FALSE(contains(few, "stat. 95%")) << few;
  EXPECT_TRUE(contains(few, "title 'total 68% (stat. + syst.)'")) << few;
  EXPECT_TRUE(contains(few, "dt 2 lc rgb '#D55E00' title 'prior (MC gen)'")) << few;
  EXPECT_TRUE(contains(few, "lc rgb '#E69F00'")) << few;
  // The truth's highest reach, 0.45 + 0.2, times 1.3.
  EXPECT_TRUE(contains(few, "set yrange [0:0.845]")) << few;
  EXPECT_TRUE(contains(few, "with yerrorbars pt 7 ps 0.6 lw 1 lc rgb 'black' title 'truth'"))
      << few;
  // Ratios to the unfolded: the 68% band [0.9, 1.1] and the truth's points 0.45 / 0.5 and
  // 0.25 / 0.2 (their error bars do not set it) span [0.9, 1.25], padded by 10% to
  // [0.865, 1.285], at least [0.8, 1.2]; no tick at the top, where the upper panel's 0 is.
  EXPECT_TRUE(contains(few, "set ylabel 'ratio to unfolded'")) << few;
  EXPECT_FALSE(contains(few, "ratio to truth")) << few;
  EXPECT_TRUE(contains(few, "set yrange [0.8:1.285]")) << few;
  EXPECT_TRUE(contains(few, "set ytics 0.8, 0.1, 1.2365")) << few;
  EXPECT_FALSE(contains(few, "pt 9")) << "no truth off the ratio panel";

  // 20 replicas and more: the 95% band too. Over every replica: said so.
  bp.replicas = 25;
  bp.replica_0_in_band = true;
  bp.truth = {0.25, 0.45, 3.0};  // its ratio 10, off the panel's [.., 3] at the top
  bp.total_sigma.clear();
  bp.truth_sigma.clear();
  GnuplotBatch many;
  many.add("many", bp);
  const std::string all = many.script();
  EXPECT_TRUE(contains(all, "'mass (25 replicas, replica 0 included)'")) << all;
  EXPECT_TRUE(contains(all, "title 'stat. 95% (replicas)'")) << all;
  EXPECT_TRUE(contains(all, "title 'stat. 68% (replicas)'")) << all;
  EXPECT_FALSE(contains(all, "total 68%")) << all;
  // No truth error: a dashed line, as before.
  EXPECT_TRUE(contains(all, "with lines lw 1.5 dt 2 lc rgb 'black' title 'truth'")) << all;
  EXPECT_TRUE(contains(all, "set yrange [0:3.9]")) << all;
  EXPECT_TRUE(contains(all, "set yrange [0:3]\n")) << "the ratio panel at most [0, 3]: " << all;

  // Points off the ratio panel are drawn at its edge as triangles, not left out unsaid.
  bp.truth_sigma = {0.01, 0.01, 0.01};
  bp.truth = {0.25, 0.45, 3.0};
  GnuplotBatch off;
  off.add("off", bp);
  EXPECT_TRUE(contains(off.script(), "using 1:4 with points pt 9")) << off.script();
  EXPECT_FALSE(contains(off.script(), "pt 11")) << off.script();

  // The heat map: a grey background under undrawn (NaN) values, and a colour bar label.
  Heatmap hm;
  hm.title = "t";
  hm.axis_label = "x";
  hm.zlabel = "correlation coefficient";
  hm.edges = {0, 1, 2};
  hm.values = {1, std::nan(""), std::nan(""), std::nan("")};
  GnuplotBatch heat;
  heat.add("heat", hm);
  EXPECT_TRUE(contains(heat.script(), "set cblabel 'correlation coefficient'"));
  EXPECT_TRUE(contains(heat.script(), "behind fillcolor rgb '#bdbdbd'"));

  if (gnuplotAvailable()) {  // gnuplot reads every one of them
    for (GnuplotBatch* g : {&batch, &many, &off, &heat})
      for (const auto& [name, png] : g->render()) EXPECT_GT(png.size(), 1000u) << name;
  }
}

TEST(BandsFile, GarbageIsInputErrorNamingTheFile) {
  ScratchDir scratch;
  const std::string p = scratch.path() + "/bands.h5";
  writeFileAtomic(p, "not hdf5 at all");
  try {
    readBandsFile(p);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_TRUE(contains(e.what(), p)) << e.what();
  }
}

// A damaged bands.h5 (a NaN or Inf value, edges that do not increase) is refused naming the
// dataset and the index, not drawn as a gap or a band without a word.
TEST(BandsFile, NonFiniteValuesAndUnorderedEdgesAreRefusedNamingTheDataset) {
  struct Case {
    const char* dataset;
    size_t index;
    double value;
    const char* says;
  };
  const double nan = std::nan(""), inf = HUGE_VAL;
  for (const Case& c :
       {Case{"mass/std", 3, nan, "dataset mass/std holds NaN at index 3"},
        Case{"width/nominal", 0, inf, "dataset width/nominal holds Inf at index 0"},
        Case{"mass/correlation", 50, nan, "dataset mass/correlation holds NaN at index 50"},
        Case{"multiplicity/truth", 7, -inf, "dataset multiplicity/truth holds Inf"},
        Case{"mass/edges", 5, 0.0, "mass/edges do not increase at index 5"}}) {
    ScratchDir scratch;
    writeAggregate(scratch.path() + "/agg", 4, true);
    const std::string p = scratch.path() + "/agg/bands.h5";
    readBandsFile(p);  // sound as written
    setBandsValue(p, c.dataset, c.index, c.value);
    try {
      readBandsFile(p);
      ADD_FAILURE() << c.dataset << ": no error";
    } catch (const InputError& e) {
      EXPECT_TRUE(contains(e.what(), p + ": " + c.says)) << e.what();
      EXPECT_TRUE(contains(e.what(), "rerun the aggregation")) << e.what();
    }
  }
}

TEST(CampaignReport, NotACampaignDirectoryIsRefusedAndNothingIsWritten) {
  ScratchDir scratch;
  fs::create_directories(scratch.path() + "/plain");
  ReportOptions o;
  o.out = scratch.path() + "/out.html";
  EXPECT_THROW(writeCampaignReport(scratch.path() + "/plain", o), InputError);
  EXPECT_THROW(writeCampaignReport(scratch.path() + "/missing", o), InputError);
  EXPECT_FALSE(fs::exists(o.out));
  EXPECT_FALSE(fs::exists(scratch.path() + "/plain/report.html"));
}

// The page replaces only an earlier page: an --out naming the campaign's spec or journal is
// refused before anything is rendered, and the file is kept.
TEST(CampaignReport, AnOutThatIsNotAPageIsRefusedAndKept) {
  ScratchDir scratch;
  const std::string dir = initCampaign(scratch);
  for (const char* name : {"spec.json", "journal.sqlite"}) {
    const std::string target = dir + "/" + name;
    ASSERT_TRUE(fs::exists(target)) << target;
    const std::string before = readFile(target);
    ReportOptions o;
    o.out = target;
    try {
      writeCampaignReport(dir, o);
      FAIL() << "the report replaced " << target;
    } catch (const InputError& e) {
      EXPECT_TRUE(contains(e.what(), target)) << e.what();
    }
    EXPECT_EQ(readFile(target), before);
  }
  ReportOptions o;
  o.out = scratch.path() + "/no_dir/page.html";
  EXPECT_THROW(writeCampaignReport(dir, o), InputError);
  o.out = scratch.path() + "/page.html";
  writeCampaignReport(dir, o);
  writeCampaignReport(dir, o);  // an earlier page is replaced
  EXPECT_TRUE(contains(readFile(o.out), "id=\"states-table\""));
}

// The page's inputs are read under the campaign's outputs lock, shared: an aggregation (or an
// extend, an accept-inputs) holding it refuses the report, naming itself, and nothing is
// written; reports read side by side; a command that would change the outputs while a report
// reads them is refused, naming the report.
TEST(CampaignReport, ReadsTheOutputsOfOneMomentUnderTheirLock) {
  ScratchDir scratch;
  const std::string dir = initCampaign(scratch);
  const std::string me = "pid " + std::to_string(::getpid()) + " on " + hostName();
  {
    const Fd held = jobs::lockCampaignOutputs(dir, "`foldfarm campaign aggregate`");
    try {
      writeCampaignReport(dir, {});
      ADD_FAILURE() << "a report read the outputs while an aggregation held them";
    } catch (const InputError& e) {
      EXPECT_TRUE(contains(e.what(), dir + ": `foldfarm campaign aggregate` (" + me +
                                         ") is using this campaign's outputs"))
          << e.what();
      EXPECT_TRUE(contains(e.what(), "then run `foldfarm report` again")) << e.what();
    }
    EXPECT_FALSE(fs::exists(dir + "/report.html"));
  }
  {
    const Fd reading = jobs::readCampaignOutputs(dir, "`foldfarm report`");
    ASSERT_TRUE(reading.valid());
    EXPECT_EQ(writeCampaignReport(dir, {}).path, dir + "/report.html") << "readers side by side";
    EXPECT_EQ(jobs::campaignOutputsUser(dir), "") << "a reader changes nothing";
    try {
      jobs::lockCampaignOutputs(dir, "`foldfarm campaign extend`");
      ADD_FAILURE() << "the outputs were locked for a change while a report read them";
    } catch (const InputError& e) {
      // (This test's process holds it: neither command line, so both are named.)
      EXPECT_TRUE(contains(e.what(), dir +
                                         ": a reader (`foldfarm report` or `foldfarm campaign "
                                         "aggregate --out`) (" +
                                         me + ", reading them) is using this campaign's outputs"))
          << e.what();
    }
  }
  {
    // A reader of another process whose command line is an aggregation into --out (a shell
    // named so, holding the lock shared while it sleeps): named as that.
    const std::string path = dir + "/" + jobs::kOutputsLockFile;
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::setpgid(0, 0);  // the shell and its sleep, ended together
      const int fd = ::open(path.c_str(), O_RDONLY);
      if (fd < 0 || ::flock(fd, LOCK_SH) != 0) ::_exit(1);
      ::execl("/bin/sh", "foldfarm", "-c", "sleep 20", "campaign", "aggregate", dir.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(1);
    }
    ::setpgid(child, child);  // as the child does: whichever runs first
    const std::string them = "pid " + std::to_string(child) + " on " + hostName();
    std::string why;
    for (int k = 0; k < 100 && why.find(them) == std::string::npos; ++k) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      try {
        jobs::lockCampaignOutputs(dir, "`foldfarm campaign extend`");
        why = "locked";
      } catch (const InputError& e) {
        why = e.what();
      }
    }
    ::kill(-child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    EXPECT_TRUE(contains(why, dir + ": `foldfarm campaign aggregate --out` (" + them +
                                  ", reading them) is using this campaign's outputs"))
        << why;
  }
  EXPECT_NO_THROW(jobs::lockCampaignOutputs(dir, "`foldfarm campaign extend`"));
}

TEST(CampaignReport, AbsentInputsAreOmittedWithANoteNotFaked) {
  ScratchDir scratch;
  const std::string dir = initCampaign(scratch);
  ReportResult r = writeCampaignReport(dir, {});
  EXPECT_EQ(r.path, dir + "/report.html");
  const std::string html = readFile(r.path);
  for (const char* id :
       {"distributions", "delta", "correlations", "weights", "throughput", "warmstart"}) {
    EXPECT_TRUE(contains(html, std::string("<section id=\"") + id + "\" class=\"omitted\">")) << id;
  }
  EXPECT_TRUE(contains(html, "id=\"states-table\""));
  EXPECT_TRUE(contains(html, "<td>pending</td><td>6</td>"));
  EXPECT_EQ(r.images, 0);
  EXPECT_FALSE(contains(html, "<img"));
  EXPECT_FALSE(contains(html, "<script"));
  EXPECT_FALSE(contains(html, "http://"));
  EXPECT_FALSE(contains(html, "https://"));
  // Without a truth in the spec the way to the bands gives one.
  EXPECT_TRUE(contains(
      html, "(run `foldfarm campaign aggregate " + htmlEscape(dir) + " --truth TRUTH.h5`)"))
      << html;

  // With one, the plain command (before: --truth TRUTH.h5 all the same).
  jobs::registerBuiltinTaskKinds();
  nlohmann::json with_truth = commandSpec(1, 1, {});
  writeJson(scratch.path() + "/truth.h5", nlohmann::json::object());
  with_truth["inputs"] = {{"truth", scratch.path() + "/truth.h5"}};
  writeJson(scratch.path() + "/truth-spec.json", with_truth);
  const std::string dir2 = scratch.path() + "/camp-truth";
  jobs::initCommand(scratch.path() + "/truth-spec.json", dir2);
  const std::string html2 = readFile(writeCampaignReport(dir2, {}).path);
  EXPECT_TRUE(contains(html2, "(run `foldfarm campaign aggregate " + htmlEscape(dir2) + "`)"))
      << html2;
  EXPECT_FALSE(contains(html2, "--truth TRUTH.h5`)")) << html2;
  // An aggregation without the truth the spec names (`aggregate --runs`): aggregate again.
  // One replica: no band, not "1 bootstrap replicas".
  AggregateFixture one = writeAggregate(dir2 + "/aggregate", 1, false);
  one.summary["band_replicas"] = 1;
  writeJson(dir2 + "/aggregate/summary.json", one.summary);
  const std::string html3 = renderCampaignReport(dir2, {});
  EXPECT_TRUE(contains(html3,
                       "has no truth comparison (the spec names a truth: run `foldfarm "
                       "campaign aggregate " +
                           htmlEscape(dir2) + "` again)"))
      << html3;
  EXPECT_TRUE(contains(html3,
                       "<td>replicas in the statistical band</td><td>1 (one replica: no "
                       "statistical band)</td>"))
      << html3.substr(html3.find("overview-table"), 3000);
}

// The overview names the files the bands were computed from and their checksums.
TEST(CampaignReport, TheOverviewNamesTheInputsAndTheirChecksums) {
  ScratchDir scratch;
  const std::string dir = initCampaign(scratch);
  AggregateFixture fx = writeAggregate(dir + "/aggregate", 4, true);
  fx.summary["inputs"] = {
      {"nominal",
       {{"mc", {{"path", "/d/mc.h5"}, {"size", 1000}, {"sha256", std::string(64, 'a')}}},
        {"foundation", {{"path", "/d/found"}, {"files", 2}, {"bytes", 300}, {"sha256", nullptr}}}}},
      {"variations",
       {{"det_up", {{"mc", {{"path", "/d/mc<up>.h5"}, {"size", 900}, {"sha256", "b"}}}}}}}};
  writeJson(dir + "/aggregate/summary.json", fx.summary);
  const std::string html = renderCampaignReport(dir, {});
  EXPECT_TRUE(contains(
      html, "<td>input mc</td><td>/d/mc.h5 (1000 bytes), sha256 " + std::string(64, 'a') + "</td>"))
      << html.substr(html.find("overview-table"), 2000);
  EXPECT_TRUE(contains(html,
                       "<td>input foundation</td><td>/d/found (2 files, 300 bytes), no "
                       "checksum recorded</td>"));
  EXPECT_TRUE(contains(html,
                       "<td>input det_up.mc</td><td>/d/mc&lt;up&gt;.h5 (900 bytes), sha256 "
                       "b</td>"));
}

// The page names the build that wrote it (its header) and, in the overview, those that made the
// bands and finished the chains (summary.json): what a publication made with it cites.
TEST(CampaignReport, ThePageNamesTheBuildsThatMadeItTheBandsAndTheChains) {
  ScratchDir scratch;
  const std::string dir = initCampaign(scratch);
  AggregateFixture fx = writeAggregate(dir + "/aggregate", 4, true);
  nlohmann::json other = buildInfoJson();
  other["commit"] = "0123abc";
  fx.summary["build"] = other;
  fx.summary["chain_builds"] = {{{"build", buildInfoJson()}, {"chains", 3}},
                                {{"build", other}, {"chains", 1}},
                                {{"build", nullptr}, {"chains", 2}}};
  writeJson(dir + "/aggregate/summary.json", fx.summary);
  const std::string html = renderCampaignReport(dir, {});
  const std::string version = std::string("foldfarm ") + FOLDFARM_VERSION;
  EXPECT_TRUE(contains(
      html, " by " + version + ", commit " + htmlEscape(buildInfo().commit) + "</p>\n<nav>"))
      << html.substr(0, 3000);
  EXPECT_TRUE(contains(html, "<td>aggregated by</td><td>" + version + ", commit 0123abc</td>"))
      << html.substr(html.find("overview-table"), 3000);
  EXPECT_TRUE(
      contains(html, "<td>chains finished by</td><td>" + version + ", commit " +
                         htmlEscape(buildInfo().commit) + " (3 chain(s)); " + version +
                         ", commit 0123abc (1 chain(s)); no build recorded (2 chain(s))</td>"))
      << html.substr(html.find("overview-table"), 3000);
}

// The overview's resources are the spec's, beside the most tasks that ran at once (a run with
// --slots, a pilot or arrays used others; before, the spec's slots alone were shown).
TEST(CampaignReport, TheOverviewSaysHowManyTasksRanAtOnce) {
  ScratchDir scratch;
  const std::string dir = initCampaign(scratch);  // 2 CPU slots in the spec, 6 tasks
  const auto resources = [&] {
    const std::string html = renderCampaignReport(dir, {});
    const size_t at = html.find("<td>resources</td>");
    return at == std::string::npos ? html : html.substr(at, html.find("</tr>", at) - at);
  };
  EXPECT_EQ(resources(), "<td>resources</td><td>2 CPU slot(s) in the spec; nothing ran yet</td>");
  {
    jobs::CampaignJournal j = jobs::CampaignJournal::open(dir + "/journal.sqlite");
    const auto run = [&](std::vector<int> indices) {
      std::vector<jobs::Dispatch> d;
      for (int i : indices) d.push_back({i, "h", i, "", 0});
      ASSERT_EQ(j.markRunning(d), static_cast<int>(indices.size()));
    };
    const auto done = [&](std::vector<int> indices) {
      std::vector<jobs::Completion> c;
      for (int i : indices) {
        jobs::Completion x;
        x.index = i;
        x.attempt = 1;
        c.push_back(x);
      }
      ASSERT_EQ(j.recordCompletions(c, jobs::RetryPolicy{}), static_cast<int>(indices.size()));
    };
    run({0, 1});
    done({0});
    run({2});  // two at once still: 1 and 2
    done({1, 2});
    run({3, 4, 5});  // three at once
    done({3, 4, 5});
  }
  EXPECT_EQ(resources(),
            "<td>resources</td><td>2 CPU slot(s) in the spec; at most 3 task(s) ran at once</td>");
  // A done task run again (`campaign retry --task`) completes twice: counted as a run again
  // (before: the throughput figure read "7 of 6").
  {
    jobs::CampaignJournal j = jobs::CampaignJournal::open(dir + "/journal.sqlite");
    ASSERT_EQ(j.rerun({0}, "run again by the test", {}), 1);
    std::vector<jobs::Dispatch> again{{0, "h", 0, "", 0}};
    ASSERT_EQ(j.markRunning(again), 1);
    jobs::Completion x;
    x.index = 0;
    x.attempt = 2;
    ASSERT_EQ(j.recordCompletions({x}, jobs::RetryPolicy{}), 1);
  }
  const report::CampaignStats stats = report::readCampaignStats(dir);
  EXPECT_EQ(stats.done_at.size(), 7u);
  EXPECT_EQ(stats.runs_again, 1);
  EXPECT_EQ(stats.tasks, 6);
  // The accounting says so too: its throughput is of task runs then.
  const std::string html = renderCampaignReport(dir, {});
  EXPECT_NE(html.find("<td>runs of tasks done before (retry --task, accept-inputs)</td><td>1</td>"),
            std::string::npos);
  EXPECT_NE(html.find(" task runs/h ("), std::string::npos);
}

// A short task sent to a worker behind another (the local executor queues tasks under 0.1 s)
// starts when the first ends: the accounting takes each attempt's start from its result
// (before: from when it was sent, so that on one slot "at most 2 ran at once", and the run
// time held the time it waited).
TEST(CampaignReport, ATaskQueuedInAWorkerCountsFromItsStart) {
  ScratchDir scratch;
  const std::string dir = initCampaign(scratch);
  double busy = 0;
  {
    jobs::CampaignJournal j = jobs::CampaignJournal::open(dir + "/journal.sqlite");
    std::vector<jobs::Dispatch> d{{0, "h", 0, "", 0}, {1, "h", 0, "", 0}};  // one slot
    ASSERT_EQ(j.markRunning(d), 2);
    for (int i : {0, 1}) {
      jobs::Completion x;
      x.index = i;
      x.attempt = 1;
      x.started_at = jobs::wallClockNow();
      std::this_thread::sleep_for(std::chrono::milliseconds(60));
      x.finished_at = jobs::wallClockNow();
      busy += x.finished_at - x.started_at;
      ASSERT_EQ(j.recordCompletions({x}, jobs::RetryPolicy{}), 1);
    }
  }
  const report::CampaignStats stats = report::readCampaignStats(dir);
  EXPECT_EQ(stats.peak_running, 1);
  EXPECT_NEAR(stats.run_s, busy, 0.02) << "the second task's 60 ms in the queue counted";
}

// The chains an aggregation read count the warm reference's and those it left out on purpose
// (before: a complete aggregation read as stale), and what it left out is said.
TEST(CampaignReport, TheChainsAggregatedCountEveryGroupAndWhatWasLeftOutIsSaid) {
  ScratchDir scratch;
  const std::string dir = initCampaign(scratch);  // never run: 0 tasks done
  AggregateFixture fx = writeAggregate(dir + "/aggregate", 4, true);
  fx.summary["chains"] = 4;
  fx.summary["variations"] = nlohmann::json::array({{{"name", "det_up"},
                                                     {"type", "detector"},
                                                     {"source", "det"},
                                                     {"direction", "up"},
                                                     {"chains", 2},
                                                     {"replicas", 1},
                                                     {"shift_from", "warm_reference"}}});
  fx.summary["warm_reference"] = {{"name", "warm_reference"}, {"chains", 2}, {"replicas", 1}};
  fx.summary["incomplete"] = {{"sources_left_out", {{"det", "det_down"}}},
                              {"variations", {{"alt", {{"done", 0}, {"tasks", 1}}}}},
                              {"chains_left_out", 1}};
  writeJson(dir + "/aggregate/summary.json", fx.summary);
  const std::string html = renderCampaignReport(dir, {});
  EXPECT_TRUE(contains(html, "the aggregation read 9 chain(s) in all, and 0 tasks are done now"))
      << html.substr(html.find("overview-table"), 3000);
  EXPECT_TRUE(contains(html,
                       "<td>aggregated before every task was done</td><td>source det left out "
                       "(its det_down had no done chain); alt: 0 of 1 chains done</td>"));
}

TEST(CampaignReport, DeltaTableCarriesTheSummaryFigures) {
  ScratchDir scratch;
  const std::string dir = initCampaign(scratch);
  AggregateFixture fx = writeAggregate(dir + "/aggregate", 8, true);
  writeChainHistory(dir + "/tasks/r0001m0", 3, 0.8, 0);
  writeChainHistory(dir + "/tasks/r0002m1", 3, 0.4, 17);
  const std::string html = renderCampaignReport(dir, {});
  ASSERT_TRUE(contains(html, "id=\"delta-table\""));
  for (const auto& name : fx.observables) {
    const auto& o = fx.summary["observables"][name];
    // One decimal, two where the error (0.01 here) needs them to show its first digit.
    const std::string row = "<td>" + name + "</td><td>" + fmt(o["delta_prior"].get<double>(), 1) +
                            "</td><td>" + fmt(o["delta_unfolded"].get<double>(), 2) +
                            " ± 0.01</td>";
    EXPECT_TRUE(contains(html, row)) << row;
  }
  // coverage 68%, coverage 68% (total), coverage 95%.
  EXPECT_TRUE(contains(html, "<td>50%</td><td>60%</td><td>75%</td>"));
  EXPECT_TRUE(contains(html, "<th>coverage 68%</th><th>coverage 68% (total)</th>"));
  // The weight table: the worst chain first, its clipped factors counted.
  ASSERT_TRUE(contains(html, "id=\"weights-chains\""));
  const size_t worst = html.find("<td>r0002m1</td>", html.find("id=\"weights-chains\""));
  const size_t better = html.find("<td>r0001m0</td>", html.find("id=\"weights-chains\""));
  ASSERT_NE(worst, std::string::npos);
  EXPECT_LT(worst, better);
  EXPECT_TRUE(
      contains(html,
               "<td>2</td><td>2</td><td>2</td><td>54.0%</td><td>36.0% (r0002m1)</td><td>64.0%</td>"
               "<td>17</td>"));
  EXPECT_TRUE(contains(html, "<th>mean ESS of the factors</th>"));
  if (gnuplotAvailable()) {
    EXPECT_FALSE(contains(html, "<section id=\"distributions\" class=\"omitted\">"));
    EXPECT_FALSE(contains(html, "<section id=\"correlations\" class=\"omitted\">"));
  }
}

// Δ x10^3 to one decimal (its error is about 1; before: "19.604 ± 1.927"), more only where an
// error below 0.1 needs them; an unfolded Δ at or below the floor says so (the truth may share
// the unfolded events' fluctuations), the prior's at the floor as before.
TEST(CampaignReport, DeltaCellsHaveOneDecimalAndAnUnfoldedDeltaBelowTheFloorIsSaid) {
  ScratchDir scratch;
  const std::string dir = initCampaign(scratch);
  AggregateFixture fx = writeAggregate(dir + "/aggregate", 8, true);
  auto& mass = fx.summary["observables"]["mass"];
  mass["delta_prior"] = 45.27;
  mass["delta_unfolded"] = 19.604;
  mass["delta_unfolded_err"] = 1.927;
  mass["delta_floor"] = 19.9;
  auto& width = fx.summary["observables"]["width"];
  width["delta_prior"] = 0.8;
  width["delta_unfolded"] = 2.5;
  width["delta_unfolded_err"] = 0.04;
  width["delta_floor"] = 1.04;
  auto& multiplicity = fx.summary["observables"]["multiplicity"];
  multiplicity["delta_prior"] = 30.0;
  multiplicity["delta_unfolded"] = 12.0;
  multiplicity["delta_unfolded_err"] = 0.8;
  multiplicity["delta_floor"] = 12.0;
  writeJson(dir + "/aggregate/summary.json", fx.summary);
  const std::string html = renderCampaignReport(dir, {});
  EXPECT_TRUE(contains(html,
                       "<td>mass</td><td>45.3</td><td>19.6 ± 1.9 (at or below floor)</td>"
                       "<td>19.9</td>"))
      << html.substr(html.find("delta-table"), 3000);
  // The prior's tag is as it was; an error of 0.04 to two decimals, not "± 0.0".
  EXPECT_TRUE(
      contains(html, "<td>width</td><td>0.8 (at floor)</td><td>2.50 ± 0.04</td><td>1.0</td>"))
      << html.substr(html.find("delta-table"), 3000);
  EXPECT_TRUE(contains(html,
                       "<td>multiplicity</td><td>30.0</td><td>12.0 ± 0.8 (at or below "
                       "floor)</td><td>12.0</td>"));
  EXPECT_FALSE(contains(html, "19.604"));
  EXPECT_FALSE(contains(html, "± 0.0<"));
  // The caption says why an unfolded Δ can fall below the floor.
  EXPECT_TRUE(contains(html,
                       "the unfolded result and the truth share their fluctuations, so a Δ below "
                       "the floor is possible"));
  EXPECT_FALSE(contains(html, "Δ after each iteration</th>")) << "no chain kept its iterations";
  // Where the chains kept each iteration's result: its Δ, after "shift recovered".
  mass["delta_by_iteration"] = {24.13, 20.01, 19.604};
  writeJson(dir + "/aggregate/summary.json", fx.summary);
  const std::string with = renderCampaignReport(dir, {});
  EXPECT_TRUE(contains(with, "Δ after each iteration</th>"));
  const size_t row = with.find("<td>mass</td>");
  ASSERT_NE(row, std::string::npos);
  EXPECT_NE(with.find("<td>24.1 → 20.0 → 19.6</td>", row), std::string::npos)
      << with.substr(row, 600);
  EXPECT_NE(with.find("<td>-</td>", with.find("<td>width</td>")), std::string::npos);
  EXPECT_FALSE(contains(with, "Outside the binning")) << "an aggregation that does not say";
  // The shares outside the binning: named where one reaches 0.1%, else one sentence.
  for (const char* o : {"mass", "width", "multiplicity"})
    fx.summary["observables"][o]["outside_binning"] = {
        {"unfolded", {{"below", 0.0}, {"above", 0.0004}}},
        {"prior", {{"below", 0.0}, {"above", 0.0}}},
        {"truth", nullptr}};
  writeJson(dir + "/aggregate/summary.json", fx.summary);
  EXPECT_TRUE(contains(renderCampaignReport(dir, {}),
                       "Outside the binning: under 0.1% of each distribution"));
  multiplicity["outside_binning"]["unfolded"] = {{"below", 0.0}, {"above", 0.0084}};
  multiplicity["outside_binning"]["truth"] = {{"below", 0.0006}, {"above", 0.0091}};
  writeJson(dir + "/aggregate/summary.json", fx.summary);
  const std::string outside = renderCampaignReport(dir, {});
  EXPECT_TRUE(contains(outside,
                       "listed where one reaches 0.1%): multiplicity: unfolded 0.8% above, "
                       "truth 0.1% below and 0.9% above.</p>"))
      << outside.substr(outside.find("Outside the binning"), 400);
  EXPECT_FALSE(contains(outside, "Rebinned from"));
  // An aggregation rebinned from the chains' weights says which observables it rebinned.
  fx.summary["rebinned"] = {"mass", "width"};
  writeJson(dir + "/aggregate/summary.json", fx.summary);
  EXPECT_TRUE(contains(renderCampaignReport(dir, {}),
                       "Rebinned from the chains' per-event weights (<code>aggregate "
                       "--binning</code>), not the binning they ran with: mass, width.</p>"));
}

TEST(CampaignReport, BaselineColumnsSitBesideTheCampaignsDelta) {
  ScratchDir scratch;
  const std::string dir = initCampaign(scratch);
  writeAggregate(dir + "/aggregate", 8, true);
  AggregateFixture base = writeAggregate(scratch.path() + "/base/aggregate", 8, true);
  ReportOptions o;
  o.baseline_dir = scratch.path() + "/base";  // a campaign-like directory: its aggregate/
  const std::string html = renderCampaignReport(dir, o);
  EXPECT_TRUE(contains(html, "<th>Δ baseline</th>")) << "baseline column header";
  EXPECT_TRUE(contains(html, "<th>Δ floor</th>"));
  const auto& first = base.summary["observables"][base.observables[0]];
  EXPECT_TRUE(contains(html, fmt(first["delta_unfolded"].get<double>(), 2) + " ± 0.01"));
  // Paired replica by replica where both record their replicas' Δ (one campaign seed):
  // campaign less baseline, mean ± standard error; without them, a "-" and the reason.
  EXPECT_TRUE(contains(html, "<th>Δ − baseline, paired</th>"));
  EXPECT_TRUE(contains(html, "not paired here: fewer than two bootstrap replicas in common"))
      << "summaries without per-replica values";
  const auto withReplicas = [&](const std::string& agg, const nlohmann::json& deltas) {
    nlohmann::json js = nlohmann::json::parse(readFile(agg + "/summary.json"));
    js["observables"][base.observables[0]]["replica_delta_unfolded"] = deltas;
    writeFileAtomic(agg + "/summary.json", js.dump(2));
  };
  withReplicas(dir + "/aggregate", {{"1", 3.0}, {"2", 5.0}, {"3", 4.0}});
  withReplicas(scratch.path() + "/base/aggregate", {{"1", 2.0}, {"2", 3.0}, {"3", 4.0}});
  const std::string paired = renderCampaignReport(dir, o);
  // Differences 1, 2, 0: mean 1, standard error 1/sqrt(3).
  EXPECT_TRUE(contains(paired, "<td>+1.0 ± 0.6</td>")) << "paired cell";
  EXPECT_FALSE(contains(paired, "not paired here"));
  // Binned otherwise (the chain config's "binning"): Δ of two binnings are not set side by side
  // nor paired, and the paper's Δ (of OmniLearn's binning) is not shown beside it.
  const auto withEdges = [&](const std::string& agg, const nlohmann::json& edges) {
    nlohmann::json js = nlohmann::json::parse(readFile(agg + "/summary.json"));
    js["observables"][base.observables[0]]["edges"] = edges;
    writeFileAtomic(agg + "/summary.json", js.dump(2));
  };
  withEdges(dir + "/aggregate", {0.0, 100.0, 200.0, 300.0});
  withEdges(scratch.path() + "/base/aggregate", {0.0, 75.0});
  const std::string binned = renderCampaignReport(dir, o);
  const size_t row = binned.find("<td>" + base.observables[0] + "</td>");
  ASSERT_NE(row, std::string::npos);
  const std::string cells = binned.substr(row, binned.find("</tr>", row) - row);
  EXPECT_TRUE(contains(cells, "<td>- (another binning)</td><td>-</td><td>-</td>")) << cells;
  EXPECT_FALSE(contains(cells, "+1.0 ± 0.6")) << cells;
  EXPECT_TRUE(contains(binned, "the baseline bins the observable otherwise"));
  // A baseline without an aggregation is refused, and nothing is written.
  o.baseline_dir = scratch.path() + "/nowhere";
  EXPECT_THROW(writeCampaignReport(dir, o), InputError);
  EXPECT_FALSE(fs::exists(dir + "/report.html"));
}

TEST(CampaignReport, WithoutTruthTheDeltaSectionIsOmitted) {
  ScratchDir scratch;
  const std::string dir = initCampaign(scratch);
  writeAggregate(dir + "/aggregate", 4, false);
  const std::string html = renderCampaignReport(dir, {});
  EXPECT_TRUE(contains(html, "<section id=\"delta\" class=\"omitted\">"));
  EXPECT_FALSE(contains(html, "id=\"delta-table\""));
}

TEST(CampaignReport, CorruptSummaryIsRefusedAndThePreviousReportIsKept) {
  ScratchDir scratch;
  const std::string dir = initCampaign(scratch);
  writeAggregate(dir + "/aggregate", 4, true);
  writeCampaignReport(dir, {});
  const std::string before = readFile(dir + "/report.html");
  writeFileAtomic(dir + "/aggregate/summary.json", "{\"observables\": {\"mass\": ");
  try {
    writeCampaignReport(dir, {});
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_TRUE(contains(e.what(), dir + "/aggregate/summary.json")) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "one line";
  }
  EXPECT_EQ(readFile(dir + "/report.html"), before);
  writeFileAtomic(dir + "/aggregate/summary.json",
                  "{\"observables\": {\"mass\": {\"delta_prior\": \"x\"}}}");
  EXPECT_THROW(writeCampaignReport(dir, {}), InputError);
  EXPECT_EQ(readFile(dir + "/report.html"), before);
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

TEST(CampaignReport, UncertaintyBreakdownShowsEverySourceAndTheFigures) {
  ScratchDir scratch;
  const std::string dir = initCampaign(scratch);
  AggregateFixture fx = writeAggregate(dir + "/aggregate", 8, true);
  addVariations(dir + "/aggregate", fx);
  ReportResult r;
  const std::string html = renderCampaignReport(dir, {}, &r);
  ASSERT_TRUE(contains(html, "<section id=\"uncertainties\">"));
  const size_t table = html.find("id=\"uncertainty-table\"");
  ASSERT_NE(table, std::string::npos);
  EXPECT_TRUE(
      contains(html, "<th>uncertainty</th><th>mass</th><th>width</th><th>multiplicity</th>"));
  // Rows in order: stat, mc_stat, the sources by name, non_closure, total.
  size_t last = table;
  for (const char* row : {"stat", "stat: training noise", "mc_stat", "det", "generator",
                          "non_closure", "warm start alone (not counted)", "total"}) {
    const size_t at = html.find(std::string("<tr><td>") + row + "</td>", table);
    ASSERT_NE(at, std::string::npos) << row;
    EXPECT_GT(at, last) << row;
    last = at;
  }
  EXPECT_TRUE(contains(html, "<tr><td>det</td><td>3.4%</td><td>3.4%</td><td>3.4%</td></tr>"));
  // A source's shift beside its noise where the aggregation estimated it (generator, not det).
  EXPECT_TRUE(contains(html, "<tr><td>generator</td><td>5.1% ± 1.3%</td>"));
  // Where the aggregation could estimate it (mass only here), the training noise within stat.
  EXPECT_TRUE(contains(html, "<tr><td>stat: training noise</td><td>0.7%</td><td>-</td>"));
  const double stat = fx.summary["observables"]["mass"]["uncertainty"]["stat"].get<double>();
  EXPECT_TRUE(contains(html, "<tr><td>stat</td><td>" + fmt(100 * stat, 1) + "%</td>"));
  // The variations and one breakdown figure per observable, embedded.
  EXPECT_TRUE(contains(html, "id=\"variations-table\""));
  EXPECT_TRUE(
      contains(html,
               "<td>herwig</td><td>modelling</td><td>generator</td><td>one-sided</td><td>1</"
               "td><td>1</td><td>warm_reference</td>"));
  // A shift over fewer chains than the variation ran (one without a reference partner).
  EXPECT_TRUE(contains(html,
                       "<td>det_down</td><td>detector</td><td>det</td><td>down</td><td>2 (1 in "
                       "its shift)</td><td>2</td><td>warm_reference</td>"));
  // The warm start's own effect beside the sources, where the aggregation measured it.
  EXPECT_TRUE(
      contains(html, "<tr><td>warm start alone (not counted)</td><td>4.1% ± 0.9%</td><td>-</td>"));
  for (const auto& name : fx.observables)
    EXPECT_TRUE(contains(html, name + ": relative uncertainty per bin")) << name;
  // Beside a breakdown, the sources' signed shifts where the aggregation drew them (mass).
  EXPECT_TRUE(contains(html, "mass: the shift of each variation"));
  EXPECT_EQ(html.find("width: the shift of each variation"), std::string::npos);
  EXPECT_GE(r.images, 3);
  EXPECT_TRUE(contains(html, "<td>50%</td><td>70%</td><td>75%</td>"));
  // The text says whether each source's row holds its shift's noise.
  EXPECT_TRUE(contains(html, "Each source counts its whole shift, noise included"));
  fx.summary["shift_noise"] = "subtracted";
  writeJson(dir + "/aggregate/summary.json", fx.summary);
  const std::string subtracted = renderCampaignReport(dir, {});
  EXPECT_TRUE(contains(subtracted, "its row is what is left of its shift beyond its noise"));
  EXPECT_FALSE(contains(subtracted, "Each source counts its whole shift"));
}

TEST(CampaignReport, WithoutVariationsTheBreakdownShowsStatAndTotal) {
  ScratchDir scratch;
  const std::string dir = initCampaign(scratch);
  AggregateFixture fx = writeAggregate(dir + "/aggregate", 6, false);
  const std::string html = renderCampaignReport(dir, {});
  ASSERT_TRUE(contains(html, "<section id=\"uncertainties\">"));
  EXPECT_TRUE(contains(html, "<tr><td>stat</td>"));
  EXPECT_TRUE(contains(html, "<tr><td>total</td>"));
  EXPECT_FALSE(contains(html, "<tr><td>mc_stat</td>"));
  EXPECT_FALSE(contains(html, "training noise</td>"));  // no member pairs: no row
  EXPECT_FALSE(contains(html, "id=\"variations-table\""));
  // An aggregation from before the breakdown existed: omitted with a note, not faked.
  for (auto& [name, o] : fx.summary["observables"].items()) o.erase("uncertainty");
  writeJson(dir + "/aggregate/summary.json", fx.summary);
  const std::string old = renderCampaignReport(dir, {});
  EXPECT_TRUE(contains(old, "<section id=\"uncertainties\" class=\"omitted\">"));
  // A breakdown that is not numbers is refused.
  fx.summary["observables"]["mass"]["uncertainty"] = {{"stat", "big"}};
  writeJson(dir + "/aggregate/summary.json", fx.summary);
  EXPECT_THROW(renderCampaignReport(dir, {}), InputError);
}

// An observable that bands.h5 holds and summary.json does not (files of two aggregations):
// drawn from bands.h5, but no row of dashes in the Δ table or the breakdown.
TEST(CampaignReport, AnObservableMissingFromTheSummaryGetsNoTableRow) {
  ScratchDir scratch;
  const std::string dir = initCampaign(scratch);
  AggregateFixture fx = writeAggregate(dir + "/aggregate", 8, true);
  ASSERT_GE(fx.observables.size(), 2u);
  const std::string gone = fx.observables.back();
  fx.summary["observables"].erase(gone);
  writeJson(dir + "/aggregate/summary.json", fx.summary);
  const std::string html = renderCampaignReport(dir, {});
  for (const char* table : {"id=\"delta-table\"", "id=\"uncertainty-table\""}) {
    const size_t from = html.find(table);
    ASSERT_NE(from, std::string::npos) << table;
    const std::string rows = html.substr(from, html.find("</table>", from) - from);
    EXPECT_FALSE(contains(rows, "<td>" + gone + "</td>")) << table;
    EXPECT_FALSE(contains(rows, "<th>" + gone + "</th>")) << table;
    EXPECT_TRUE(contains(rows, fx.observables.front())) << table;
  }
}
