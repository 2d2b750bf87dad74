-- Honest evaluation: a model keeps its test-split evaluation apart from the validation one (used
-- for selection), says why it has no evaluation when nothing was held out, records the split its
-- transferGain was measured on, its temperature-scaling calibration, and a confidence threshold
-- below which /predict answers "unknown". All nullable: models trained before keep their rows.

-- AlterTable
ALTER TABLE "models" ADD COLUMN     "testEvaluation" JSONB,
ADD COLUMN     "evaluationNote" TEXT,
ADD COLUMN     "transferGainSplit" TEXT,
ADD COLUMN     "calibration" JSONB,
ADD COLUMN     "confidenceThreshold" DOUBLE PRECISION;
