"""Pilot (run as: python staging/v2-pilot/pilot.py OUT_DIR 2000): the shipped main model continued on the v2 distribution (V1 sizes, answer-now, 0-2 shots), plain loss."""
import json, sys
from dataclasses import replace
from reasonlens.train import TrainConfig, train, ArchitectureConfig
from reasonlens.ontology.generator import V1_SIZES
from reasonlens.model import model_info
info = model_info("reasonlens-main")
lo, hi = info.metadata["train_question_seeds"]
cfg = TrainConfig(architecture=ArchitectureConfig(n_layers=6), seed=0, background_steps=0, cot_steps=int(sys.argv[2]),
                  lr=6e-4, warmup_steps=50, decision_weight=1.0, form_weight=1.0, isa_rule_weight=1.0,
                  curriculum_steps=0, min_extra_concepts=0, sizes=V1_SIZES, answer_now_p=0.2, max_shots=2,
                  few_shot_p=0.1, vocabulary=2, eval_every=250, eval_n=48, threads=1,
                  init_from=str(info.path), question_offset=hi - lo)
print(cfg.question_seeds, lo, hi, flush=True)
log = train(cfg, sys.argv[1], progress=True)
