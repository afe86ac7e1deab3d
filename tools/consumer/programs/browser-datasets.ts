// A browser entry that uses the datasets' main entry (not the embedded subset).
import { Dataset, randomSubset, standardAugmentation } from '@regstack/datasets';

export { Dataset, randomSubset, standardAugmentation };
