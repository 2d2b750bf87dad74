-- A job with learningRate "auto" keeps its learning-rate range test: the curve, the suggested and the chosen rate.

-- AlterTable
ALTER TABLE "jobs" ADD COLUMN     "learningRateFinder" JSONB;
