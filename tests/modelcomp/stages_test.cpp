// Compression recipes: stage spec strings and their order (lib/modelcomp/stages.h).
#include "modelcomp/stages.h"

#include <doctest/doctest.h>

#include "util/check.h"

using namespace frugal;
using namespace frugal::modelcomp;

TEST_CASE("compress stages: every stage parses its fields") {
  Stage p = parse_stage("prune:taylor:0.92");
  CHECK(p.kind == StageKind::prune);
  CHECK(p.criterion == "taylor");
  CHECK(p.amount == doctest::Approx(0.92));
  Stage f = parse_stage("prune:magnitude:@runs/sens/targets.json");
  CHECK(f.targets_file == "runs/sens/targets.json");
  Stage g = parse_stage("gradual:0.95:6");
  CHECK(g.kind == StageKind::gradual);
  CHECK(g.amount == doctest::Approx(0.95));
  CHECK(g.epochs == 6);
  Stage t = parse_stage("finetune:3:0.005");
  CHECK(t.epochs == 3);
  CHECK(t.lr == doctest::Approx(0.005));
  CHECK(parse_stage("finetune:2").lr == 0);
  Stage s = parse_stage("share:5:8");
  CHECK(s.bits == 5);
  CHECK(s.conv_bits == 8);
  CHECK(parse_stage("share:@bits.json").targets_file == "bits.json");
  Stage c = parse_stage("channels:magnitude:0.5");
  CHECK(c.kind == StageKind::channels);
  CHECK(c.amount == doctest::Approx(0.5));
  CHECK(parse_stage("lowrank:0.9").amount == doctest::Approx(0.9));
  CHECK(parse_stage("int8").kind == StageKind::int8);
  CHECK(split_stage_list("prune:global:0.9, finetune:2 ,huffman") ==
        std::vector<std::string>{"prune:global:0.9", "finetune:2", "huffman"});
}

TEST_CASE("compress stages: malformed stages are refused naming the stage") {
  for (const char* bad : {"prune:magnitude:1.0", "prune:random:0.5", "prune:global:@t.json", "prune:magnitude",
                          "share:0", "share:17", "share:4.5", "finetune:0", "finetune:2:-1", "gradual:0.9",
                          "channels:taylor:0", "lowrank:1.5", "lowrank:0", "int8:1", "huffman:2", "quantize:8",
                          "prune:magnitude:@", "prune::0.5"}) {
    INFO(bad);
    CHECK_THROWS_AS(parse_stage(bad), Error);
  }
  CHECK_THROWS_WITH_AS(parse_stage("share:17"), doctest::Contains("share:17"), Error);
  CHECK_THROWS_WITH_AS(parse_stage("quantize:8"), doctest::Contains("finetune:EPOCHS"), Error);
}

TEST_CASE("compress stages: the order is checked and huffman is implicit") {
  auto kinds = [](const std::vector<Stage>& s) {
    std::vector<StageKind> k;
    for (const Stage& x : s) k.push_back(x.kind);
    return k;
  };
  CHECK(kinds(parse_stages({"prune:magnitude:0.9", "finetune:2", "share:5"})) ==
        std::vector<StageKind>{StageKind::prune, StageKind::finetune, StageKind::share, StageKind::huffman});
  CHECK(kinds(parse_stages({"channels:taylor:0.5", "finetune:1", "int8"})).back() == StageKind::int8);
  CHECK(parse_stages({"gradual:0.9:3", "share:4", "huffman"}).size() == 3);
  CHECK_THROWS_WITH_AS(parse_stages({"prune:magnitude:0.5", "channels:taylor:0.5"}),
                       doctest::Contains("before prune"), Error);
  CHECK_THROWS_WITH_AS(parse_stages({"share:5", "prune:magnitude:0.5"}), doctest::Contains("after share"), Error);
  CHECK_THROWS_WITH_AS(parse_stages({"prune:magnitude:0.5", "int8"}), doctest::Contains("int8"), Error);
  CHECK_THROWS_WITH_AS(parse_stages({"huffman", "finetune:1"}), doctest::Contains("last stage"), Error);
  CHECK_THROWS_WITH_AS(parse_stages({"share:5", "share:4"}), doctest::Contains("already shared"), Error);
  CHECK_THROWS_AS(parse_stages({}), Error);
}
