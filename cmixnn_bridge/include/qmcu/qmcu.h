/* Umbrella header of the QMCU kernel library (cmixnn_bridge). */
#ifndef QMCU_QMCU_H
#define QMCU_QMCU_H

#include "qmcu/qmcu_types.h"
#include "qmcu/qmcu_ops.h"

#endif /* QMCU_QMCU_H */
