-- Domain adaptation: a dataset is labelled (class folders, as before) or unlabelled (images of the
-- target domain without classes), and a domain-adapted model keeps its evaluation on a labelled
-- target-domain dataset apart from the source validation and test reports.

-- CreateEnum
CREATE TYPE "DatasetKind" AS ENUM ('labelled', 'unlabelled');

-- AlterTable
ALTER TABLE "datasets" ADD COLUMN     "kind" "DatasetKind" NOT NULL DEFAULT 'labelled';

-- AlterTable: a direct upload says which kind of dataset it completes into.
ALTER TABLE "dataset_uploads" ADD COLUMN     "kind" "DatasetKind" NOT NULL DEFAULT 'labelled';

-- AlterTable
ALTER TABLE "models" ADD COLUMN     "targetEvaluation" JSONB;
